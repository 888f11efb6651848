"""forwardauth: the authentication sidecar that reverse proxies ask "may this request pass?"."""

__version__ = "0.1.0"
