import jakarta.servlet.http.HttpServlet;
import jakarta.servlet.http.HttpServletRequest;
import jakarta.servlet.http.HttpServletResponse;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.Collections;
import org.apache.catalina.Lifecycle;
import org.apache.catalina.connector.Connector;
import org.apache.catalina.core.StandardContext;
import org.apache.catalina.startup.Tomcat;

/**
 * An embedded Tomcat 10 for the boundary tests: a servlet mapped to /admin/* and a default
 * servlet, each answering with what Tomcat made of the request (Tomcat strips ;params and
 * reads "..;" as ".."), so a test can tell which resource was really served.
 * Usage: java -cp ... TomcatBackend PORT BASEDIR
 */
public final class TomcatBackend {
    private TomcatBackend() {}

    static String quote(String value) {
        if (value == null) {
            return "null";
        }
        StringBuilder out = new StringBuilder("\"");
        for (char c : value.toCharArray()) {
            if (c == '"' || c == '\\') {
                out.append('\\').append(c);
            } else if (c < 0x20 || c > 0x7e) {
                out.append(String.format("\\u%04x", (int) c));
            } else {
                out.append(c);
            }
        }
        return out.append('"').toString();
    }

    static final class Echo extends HttpServlet {
        private static final long serialVersionUID = 1L;
        private final String name;

        Echo(String name) {
            this.name = name;
        }

        @Override
        protected void service(HttpServletRequest request, HttpServletResponse response) throws IOException {
            StringBuilder headers = new StringBuilder("{");
            for (String header : Collections.list(request.getHeaderNames())) {
                if (headers.length() > 1) {
                    headers.append(',');
                }
                headers.append(quote(header)).append(':').append(quote(request.getHeader(header)));
            }
            headers.append('}');
            String body = "{\"server\":\"tomcat\",\"servlet\":" + quote(name)
                + ",\"method\":" + quote(request.getMethod())
                + ",\"requestURI\":" + quote(request.getRequestURI())
                + ",\"servletPath\":" + quote(request.getServletPath())
                + ",\"pathInfo\":" + quote(request.getPathInfo())
                + ",\"headers\":" + headers + "}";
            response.setContentType("application/json");
            response.getOutputStream().write(body.getBytes(StandardCharsets.UTF_8));
        }
    }

    @SuppressWarnings("deprecation") // addServletMappingDecoded: still the embedded API in 10.1
    public static void main(String[] args) throws Exception {
        Tomcat tomcat = new Tomcat();
        tomcat.setBaseDir(args[1]);
        Connector connector = new Connector();
        connector.setPort(Integer.parseInt(args[0]));
        connector.setProperty("address", "127.0.0.1");
        tomcat.setConnector(connector);
        // Not tomcat.addContext: its listener processes annotations, and Debian's embedded jar
        // leaves out jakarta.annotation. This context needs no configuration at all.
        StandardContext context = new StandardContext();
        context.setName("");
        context.setPath("");
        context.addLifecycleListener(event -> {
            if (Lifecycle.CONFIGURE_START_EVENT.equals(event.getType())) {
                context.setConfigured(true);
            }
        });
        tomcat.getHost().addChild(context);
        Tomcat.addServlet(context, "admin", new Echo("admin"));
        context.addServletMappingDecoded("/admin/*", "admin");
        Tomcat.addServlet(context, "default", new Echo("default"));
        context.addServletMappingDecoded("/", "default");
        tomcat.start();
        tomcat.getServer().await();
    }
}
