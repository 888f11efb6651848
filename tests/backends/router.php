<?php
// A PHP backend for the boundary tests (tests/backends/__init__.py starts it with `php -S`).
// It answers every request with what PHP made of it: the raw request target, the path a PHP
// application routes on (percent-decoded once, as $_SERVER users such as Laravel do), the
// HTTP_* variables (PHP maps `-` and `.` in header names to `_`) and the header names as sent.
$uri = $_SERVER['REQUEST_URI'] ?? '';
$path = explode('?', $uri, 2)[0];
$http = [];
foreach ($_SERVER as $name => $value) {
    if (strncmp($name, 'HTTP_', 5) === 0) {
        $http[$name] = $value;
    }
}
header('Content-Type: application/json');
echo json_encode([
    'server' => 'php',
    'method' => $_SERVER['REQUEST_METHOD'] ?? '',
    'uri' => $uri,
    'path' => rawurldecode($path),
    'http' => $http,
    'headers' => function_exists('getallheaders') ? getallheaders() : [],
], JSON_UNESCAPED_SLASHES | JSON_INVALID_UTF8_SUBSTITUTE);
