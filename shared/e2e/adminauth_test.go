package e2e

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"
)

// TestAdminRefusesUnauthenticated: every route of the admin API that
// docs/openapi.json documents, and paths under /v1 it does not, answer a
// request without the admin token, with a wrong one or with a malformed
// Authorization header 401 problem+json with a Bearer challenge, before
// anything else; and none of those requests changes anything.
func TestAdminRefusesUnauthenticated(t *testing.T) {
	t.Parallel()
	s := startSystem(t, options{})
	a := s.admin()
	token := adminEnv["ADMIN_TOKEN"]

	// Real ids, so that every request would succeed with the token.
	o := s.createOrder("", "auth@example.com")
	var job struct {
		JobID string `json:"job_id"`
	}
	a.call(http.MethodPost, "/v1/subscriptions/sub_notifier/recover",
		`{"since":"`+time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)+`"}`, http.StatusAccepted, &job)
	ids := strings.NewReplacer("{id}", "sub_notifier", "{event_id}", o.EventID, "{job_id}", job.JobID)
	// bodies are requests the routes would accept with the token.
	bodies := map[string]string{
		"POST /v1/subscriptions":                          `{"url":"http://127.0.0.1:1/hooks","event_types":["order.paid"]}`,
		"PATCH /v1/subscriptions/{id}":                    `{"url":"http://127.0.0.1:1/hooks"}`,
		"POST /v1/subscriptions/{id}/secret/rotate":       `{"grace":"0s"}`,
		"POST /v1/subscriptions/{id}/dead-letters/replay": `{}`,
		"POST /v1/subscriptions/{id}/recover":             `{"since":"` + time.Now().Add(-time.Hour).UTC().Format(time.RFC3339) + `"}`,
	}

	type route struct {
		method, path, docPath string
		documented            bool
	}
	var routes []route
	paths, _ := loadDoc(t, "openapi.json")["paths"].(map[string]any)
	for p, item := range paths {
		if !strings.HasPrefix(p, "/v1/") {
			continue
		}
		for m := range item.(map[string]any) {
			switch m {
			case "get", "post", "put", "patch", "delete":
				routes = append(routes, route{strings.ToUpper(m), ids.Replace(p), p, true})
			}
		}
	}
	sort.Slice(routes, func(i, j int) bool { return routes[i].docPath+routes[i].method < routes[j].docPath+routes[j].method })
	if len(routes) < 16 {
		t.Fatalf("docs/openapi.json documents %d admin routes, want at least the 16 of the admin API", len(routes))
	}
	// Paths the API does not have: an unauthenticated caller must not
	// learn that either.
	for _, r := range [][2]string{
		{"GET", "/v1"}, {"GET", "/v1/"}, {"GET", "/v1/nothing-here"},
		{"PUT", "/v1/subscriptions/sub_notifier"}, {"DELETE", "/v1/subscriptions"},
		{"POST", "/v1/subscriptions/sub_notifier/unknown"}, {"GET", "/v1/subscriptions/not-an-id"},
	} {
		routes = append(routes, route{method: r[0], path: r[1], docPath: r[1]})
	}

	wrong := strings.Repeat("x", len(token))
	credentials := []struct {
		name  string
		apply func(*http.Request)
	}{
		{"no Authorization", func(*http.Request) {}},
		{"a wrong token", bearer(wrong)},
		{"the token without its last character", bearer(token[:len(token)-1])},
		{"the token and one more character", bearer(token + "0")},
		{"the token in upper case", bearer(strings.ToUpper(token))},
		{"Basic with the token as password", func(r *http.Request) {
			r.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("admin:"+token)))
		}},
		{"another scheme", func(r *http.Request) { r.Header.Set("Authorization", "Token "+token) }},
		{"the token without a scheme", func(r *http.Request) { r.Header.Set("Authorization", token) }},
		{"Bearer without a token", func(r *http.Request) { r.Header.Set("Authorization", "Bearer") }},
		{"Bearer and a space", func(r *http.Request) { r.Header.Set("Authorization", "Bearer ") }},
		{"the token in the query", func(r *http.Request) { r.URL.RawQuery = "access_token=" + token }},
		{"the token in another header", func(r *http.Request) { r.Header.Set("X-Admin-Token", token) }},
	}

	var before struct {
		sub, etag, secret string
	}
	snapshot := func() (string, string, string) {
		t.Helper()
		_, sub, h := send(t, a.base, http.MethodGet, "/v1/subscriptions/sub_notifier", "", bearer(token))
		_, secret, _ := send(t, a.base, http.MethodGet, "/v1/subscriptions/sub_notifier/secret", "", bearer(token))
		return sub, h.Get("ETag"), secret
	}
	before.sub, before.etag, before.secret = snapshot()

	for _, r := range routes {
		for _, c := range credentials {
			body := bodies[r.method+" "+r.docPath]
			status, b, h := send(t, a.base, r.method, r.path, body, c.apply)
			var p struct {
				Status int    `json:"status"`
				Title  string `json:"title"`
			}
			switch {
			case status != http.StatusUnauthorized:
				t.Errorf("%s %s with %s = %d %s, want 401", r.method, r.path, c.name, status, b)
			case !strings.HasPrefix(h.Get("Content-Type"), "application/problem+json") || json.Unmarshal([]byte(b), &p) != nil || p.Status != 401 || p.Title == "":
				t.Errorf("%s %s with %s: answer %q %s, want problem+json", r.method, r.path, c.name, h.Get("Content-Type"), b)
			case !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer "):
				t.Errorf("%s %s with %s: WWW-Authenticate %q, want a Bearer challenge", r.method, r.path, c.name, h.Get("WWW-Authenticate"))
			case strings.Contains(b, token[4:]):
				t.Errorf("%s %s with %s: the answer shows the token", r.method, r.path, c.name)
			}
		}
	}
	t.Logf("%d routes × %d ways without the token: all 401", len(routes), len(credentials))

	// The documented reads do answer with the token: the 401s above were
	// the token's doing, not a missing route.
	for _, r := range routes {
		if r.documented && r.method == http.MethodGet {
			if status, b, _ := send(t, a.base, r.method, r.path, "", bearer(token)); status != http.StatusOK {
				t.Errorf("%s %s with the token = %d %s, want 200", r.method, r.path, status, b)
			}
		}
	}
	sub, etag, secret := snapshot()
	if sub != before.sub || etag != before.etag || secret != before.secret {
		t.Fatalf("refused requests changed sub_notifier: %s (ETag %s) became %s (ETag %s), secret changed %v",
			before.sub, before.etag, sub, etag, secret != before.secret)
	}
	var l struct{ Data []subscriptionView }
	a.call(http.MethodGet, "/v1/subscriptions", "", http.StatusOK, &l)
	if len(l.Data) != 1 {
		t.Fatalf("refused requests created subscriptions: %+v", l.Data)
	}
}

// bearer sets the Authorization header to a Bearer token.
func bearer(token string) func(*http.Request) {
	return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+token) }
}

// send makes one request to the API at base, with a JSON body when body
// is not empty, prepared by prepare; it returns the status, the body and
// the header of the answer.
func send(t *testing.T, base, method, path, body string, prepare func(*http.Request)) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if method == http.MethodPatch {
		req.Header.Set("If-Match", "*")
	}
	prepare(req)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}
