// Oracle: builds a chi router from a JSON scenario and reports what chi answers.
// One scenario per stdin line, one result per stdout line.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"

	"chioracle/chi"
)

type Entry struct {
	Kind    string   `json:"kind"` // route, mount, not_found, method_not_allowed
	Method  string   `json:"method"`
	Pattern string   `json:"pattern"`
	Handler string   `json:"handler"`
	Router  int      `json:"router"`
	Backend string   `json:"backend"`
	With    []string `json:"with"`
}

type Router struct {
	Use     []string `json:"use"`
	Entries []Entry  `json:"entries"`
}

type Request struct {
	Method string `json:"method"`
	Path   string `json:"path"`
}

type Scenario struct {
	Routers  map[string]Router `json:"routers"`
	Requests []Request         `json:"requests"`
}

type Answer struct {
	Status  int               `json:"status"`
	Handler string            `json:"handler"`
	Params  map[string]string `json:"params"`
	Pattern string            `json:"pattern"`
	Mw      []string          `json:"mw"`
	Allow   []string          `json:"allow"`
	Backend string            `json:"backend"`
	Rest    string            `json:"rest"`
}

type Result struct {
	Panic   string   `json:"panic"`
	Answers []Answer `json:"answers"`
}

type key struct{}

func mw(name string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			trail, _ := r.Context().Value(key{}).([]string)
			trail = append(append([]string{}, trail...), name)
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), key{}, trail)))
		})
	}
}

func mws(names []string) []func(http.Handler) http.Handler {
	out := []func(http.Handler) http.Handler{}
	for _, n := range names {
		out = append(out, mw(n))
	}
	return out
}

func params(r *http.Request) map[string]string {
	rctx := chi.RouteContext(r.Context())
	out := map[string]string{}
	for _, k := range rctx.URLParams.Keys {
		out[k] = rctx.URLParam(k)
	}
	return out
}

func write(w http.ResponseWriter, r *http.Request, a Answer) {
	trail, _ := r.Context().Value(key{}).([]string)
	a.Mw = trail
	a.Params = params(r)
	a.Pattern = chi.RouteContext(r.Context()).RoutePattern()
	body, _ := json.Marshal(a)
	w.Header().Set("X-Oracle", "1")
	w.WriteHeader(a.Status)
	w.Write(body)
}

func handler(name string, status int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		write(w, r, Answer{Status: status, Handler: name})
	}
}

func backend(name string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		write(w, r, Answer{Status: 200, Backend: name, Rest: chi.RouteContext(r.Context()).RoutePath})
	}
}

func build(s Scenario, id string) *chi.Mux {
	spec := s.Routers[id]
	m := chi.NewRouter()
	if len(spec.Use) > 0 {
		m.Use(mws(spec.Use)...)
	}
	for _, e := range spec.Entries {
		var r chi.Router = m
		if e.With != nil {
			r = m.With(mws(e.With)...)
		}
		switch e.Kind {
		case "route":
			if e.Method == "*" {
				r.Handle(e.Pattern, handler(e.Handler, 200))
			} else {
				r.Method(e.Method, e.Pattern, handler(e.Handler, 200))
			}
		case "mount":
			if e.Backend != "" {
				r.Mount(e.Pattern, backend(e.Backend))
			} else {
				r.Mount(e.Pattern, build(s, fmt.Sprint(e.Router)))
			}
		case "not_found":
			r.NotFound(handler(e.Handler, 404))
		case "method_not_allowed":
			r.MethodNotAllowed(handler(e.Handler, 405))
		}
	}
	return m
}

func run(s Scenario) (res Result) {
	defer func() {
		if p := recover(); p != nil {
			res = Result{Panic: fmt.Sprint(p)}
		}
	}()
	root := build(s, "1")
	for _, q := range s.Requests {
		req := httptest.NewRequest(q.Method, "http://x"+q.Path, nil)
		rctx := chi.NewRouteContext()
		req = req.WithContext(context.WithValue(req.Context(), chi.RouteCtxKey, rctx))
		rec := httptest.NewRecorder()
		root.ServeHTTP(rec, req)
		var a Answer
		if rec.Header().Get("X-Oracle") == "1" {
			json.Unmarshal(rec.Body.Bytes(), &a)
		} else {
			a.Status = rec.Code
			a.Handler = "default"
			a.Pattern = rctx.RoutePattern()
			a.Params = map[string]string{}
			for _, k := range rctx.URLParams.Keys {
				a.Params[k] = rctx.URLParam(k)
			}
		}
		allow := rec.Header().Values("Allow")
		sort.Strings(allow)
		a.Allow = allow
		res.Answers = append(res.Answers, a)
	}
	return res
}

func main() {
	chi.RegisterMethod("DIE")
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<24)
	out := bufio.NewWriter(os.Stdout)
	for in.Scan() {
		var s Scenario
		if err := json.Unmarshal(in.Bytes(), &s); err != nil {
			fmt.Fprintln(out, `{"panic":"bad input"}`)
			continue
		}
		b, _ := json.Marshal(run(s))
		out.Write(b)
		out.WriteString("\n")
		out.Flush()
	}
}
