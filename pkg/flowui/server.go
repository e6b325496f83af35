package flowui

import (
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"strconv"
	"sync"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/flowlog"
)

//go:embed ui
var uiFiles embed.FS

// Server serves the web view and its API from a hub of records.
type Server struct {
	Hub       *flowlog.Hub
	Collector *Collector // nil: no agents listed
	// Token, when set, lets clients that present it (bearer header, or
	// ?token= once, which sets a cookie) in from anywhere; without it,
	// only loopback clients are served: records name workloads.
	Token string

	mu        sync.Mutex
	resources []v3.Resource
}

// SetResources gives the board the datastore's tiers and policies.
func (s *Server) SetResources(rs []v3.Resource) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.resources = rs
}

const tokenCookie = "tortie-flow-token"

// Handler is the whole site:
//
//	/                 the web view
//	/api/flows        recent records (JSON array), ?last=N and the filters
//	/api/stream       new records as server-sent events, with the filters
//	/api/graph        the graph of the ring's records, with the filters
//	/api/board        tiers, policies and rules with hit counts
//	/api/agents       the agents followed and their state
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(uiFiles, "ui")
	mux.Handle("/", http.FileServerFS(static))
	mux.HandleFunc("/api/flows", func(w http.ResponseWriter, r *http.Request) {
		f, ok := filter(w, r)
		if !ok {
			return
		}
		last := 500
		if v := r.URL.Query().Get("last"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				http.Error(w, fmt.Sprintf("last %q: want a number of records, 0 or more", v), http.StatusBadRequest)
				return
			}
			last = n
		}
		recs := s.Hub.Last(last, f)
		if recs == nil {
			recs = []flowlog.Record{}
		}
		writeJSON(w, recs)
	})
	mux.HandleFunc("/api/stream", s.stream)
	mux.HandleFunc("/api/graph", func(w http.ResponseWriter, r *http.Request) {
		f, ok := filter(w, r)
		if !ok {
			return
		}
		writeJSON(w, NewGraph(s.Hub.Last(0, f)))
	})
	mux.HandleFunc("/api/board", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		rs := s.resources
		s.mu.Unlock()
		writeJSON(w, NewBoard(rs, s.Hub.Last(0, flowlog.Filter{})))
	})
	mux.HandleFunc("/api/agents", func(w http.ResponseWriter, r *http.Request) {
		agents := []AgentStatus{}
		if s.Collector != nil {
			agents = s.Collector.Agents()
		}
		writeJSON(w, map[string]any{"agents": agents, "ring": s.Hub.Stats()})
	})
	return s.guard(mux)
}

// guard lets in loopback clients and clients with the token.
func (s *Server) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if t := r.URL.Query().Get("token"); t != "" && s.tokenOK(t) {
			http.SetCookie(w, &http.Cookie{Name: tokenCookie, Value: t, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode})
			q := r.URL.Query()
			q.Del("token")
			r.URL.RawQuery = q.Encode()
			http.Redirect(w, r, r.URL.String(), http.StatusSeeOther)
			return
		}
		got := flowlog.BearerToken(r)
		if c, err := r.Cookie(tokenCookie); err == nil && got == "" {
			got = c.Value
		}
		if !flowlog.Allowed(r.RemoteAddr, got, s.Token) {
			http.Error(w, "the flow view is served to loopback clients and to clients with the flow token only", http.StatusForbidden)
			return
		}
		w.Header().Set("X-Content-Type-Options", "nosniff")
		next.ServeHTTP(w, r)
	})
}

func (s *Server) tokenOK(t string) bool { return s.Token != "" && flowlog.Allowed("", t, s.Token) }

// filter reads the filters of a request, answering 400 naming the bad one.
func filter(w http.ResponseWriter, r *http.Request) (flowlog.Filter, bool) {
	q := r.URL.Query()
	q.Del("last")
	f, err := flowlog.ParseFilter(q)
	if err != nil {
		http.Error(w, "bad filter: "+err.Error(), http.StatusBadRequest)
		return f, false
	}
	return f, true
}

// stream sends each new record that passes the filters as a server-sent
// event ("data: {json}"). A client that does not keep up loses records
// (the hub never waits); a comment line says how many.
func (s *Server) stream(w http.ResponseWriter, r *http.Request) {
	f, ok := filter(w, r)
	if !ok {
		return
	}
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming is not supported here", http.StatusInternalServerError)
		return
	}
	sub := s.Hub.Subscribe(4096)
	defer sub.Close()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	fmt.Fprint(w, ": tortie flows\n\n")
	fl.Flush()
	var dropped uint64
	for {
		select {
		case <-r.Context().Done():
			return
		case rec := <-sub.C():
			if !f.Match(&rec) {
				continue
			}
			b, err := json.Marshal(rec)
			if err != nil {
				return
			}
			if d := sub.Dropped(); d != dropped {
				fmt.Fprintf(w, ": %d records dropped (a slow reader)\n", d-dropped)
				dropped = d
			}
			if _, err := fmt.Fprintf(w, "data: %s\n\n", b); err != nil {
				return
			}
			fl.Flush()
		}
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
