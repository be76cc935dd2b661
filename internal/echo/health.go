package echo

import (
	"io"
	"net/http"
)

// serveHealth answers probes on HealthPath: 200 "ok" while serving, 503
// once Shutdown has begun so that readiness checks stop routing here.
func (s *Server) serveHealth(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "405 Method Not Allowed: "+HealthPath+" accepts GET and HEAD", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	status, body := http.StatusOK, "ok\n"
	if s.shuttingDown() {
		status, body = http.StatusServiceUnavailable, "shutting down\n"
	}
	w.WriteHeader(status)
	if r.Method == http.MethodGet {
		io.WriteString(w, body)
	}
}
