package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// adminAPI talks to the dispatcher's admin API the way its users do.
type adminAPI struct {
	t     *testing.T
	base  string
	token string
	// made are the subscriptions made for the checks, deleted at the end.
	made []string
}

func newAdminAPI(t *testing.T, s *system) *adminAPI {
	return &adminAPI{t: t, base: "http://" + s.dispAddr, token: adminEnv["ADMIN_TOKEN"]}
}

// do sends one request; body over 32 KiB goes out as a streaming client
// sends it (see sendOversized). noAuth leaves the token out.
func (a *adminAPI) do(method, path, contentType, body string, h http.Header, noAuth bool) (int, []byte) {
	a.t.Helper()
	head := http.Header{}
	copyHeader(head, h)
	if !noAuth {
		head.Set("Authorization", "Bearer "+a.token)
	}
	if len(body) > 32<<10 {
		return sendOversized(a.t, method, a.base+path, contentType, []byte(body), head)
	}
	req, _ := http.NewRequest(method, a.base+path, strings.NewReader(body))
	req.Header = head
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// json sends a JSON body (none when empty) with the token.
func (a *adminAPI) json(method, path, body string) (int, []byte) {
	a.t.Helper()
	ct := ""
	if body != "" {
		ct = "application/json"
	}
	return a.do(method, path, ct, body, nil, false)
}

// subscription makes a subscription to a loopback port where nothing
// listens: deliveries to it fail without leaving the machine.
func (a *adminAPI) subscription() string {
	a.t.Helper()
	status, b := a.json("POST", "/v1/subscriptions", `{"url":"http://127.0.0.1:1/docs","event_types":["order.paid"]}`)
	var s struct{ ID string }
	if status != 201 || json.Unmarshal(b, &s) != nil {
		a.t.Fatalf("POST /v1/subscriptions = %d %s", status, b)
	}
	a.made = append(a.made, s.ID)
	return s.ID
}

// cleanup deletes the subscriptions made, so that no later event is
// retried against them.
func (a *adminAPI) cleanup() {
	for _, id := range a.made {
		a.json("DELETE", "/v1/subscriptions/"+id, "")
	}
}

// sameKeys fails unless the JSON object got has exactly the keys of the
// documented example (and, for lists, its first item the keys of the
// documented first item).
func sameKeys(t *testing.T, what string, got []byte, documented any) {
	t.Helper()
	var g map[string]any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("%s: answer %s: %v", what, got, err)
	}
	d, _ := documented.(map[string]any)
	if strings.Join(keys(g), ",") != strings.Join(keys(d), ",") {
		t.Errorf("%s: answer fields %v differ from the documented example's %v", what, keys(g), keys(d))
		return
	}
	gd, _ := g["data"].([]any)
	dd, _ := d["data"].([]any)
	if len(gd) > 0 && len(dd) > 0 {
		gi, _ := json.Marshal(gd[0])
		sameKeys(t, what+" item", gi, dd[0])
	}
}

// recent makes a documented recovery range fit the running system: the
// documents carry fixed dates, and a range must lie within the last 7
// days (ORDERS' MaxAge) and not in the future.
func recent(example map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range example {
		out[k] = v
	}
	now := time.Now().UTC()
	out["since"] = now.Add(-time.Hour).Format(time.RFC3339)
	if _, ok := out["until"]; ok {
		out["until"] = now.Add(-time.Minute).Format(time.RFC3339)
	}
	return out
}

// checkAdminExamples sends every documented admin request example and
// compares each documented answer with the real one, field for field.
func checkAdminExamples(t *testing.T, a *adminAPI, openapi map[string]any) {
	t.Helper()
	documented := func(path, method, status string) any {
		return get(openapi, "paths", path, method, "responses", status, "content", "application/json", "example")
	}
	send := func(method, path, docPath, status string, ex any) []byte {
		t.Helper()
		body, _ := json.Marshal(ex)
		got, b := a.json(method, path, string(body))
		if fmt.Sprint(got) != status {
			t.Fatalf("%s %s example %s = %d %s", method, docPath, body, got, b)
		}
		sameKeys(t, method+" "+docPath+" "+status, b, documented(docPath, strings.ToLower(method), status))
		return b
	}
	examplesOf := func(path, method string) map[string]any {
		ex := examples(get(openapi, "paths", path, method, "requestBody", "content", "application/json"))
		if len(ex) == 0 {
			t.Fatalf("%s %s has no request examples", method, path)
		}
		return ex
	}
	var id string
	for _, ex := range examplesOf("/v1/subscriptions", "post") {
		var s struct{ ID string }
		_ = json.Unmarshal(send("POST", "/v1/subscriptions", "/v1/subscriptions", "201", ex), &s)
		a.made, id = append(a.made, s.ID), s.ID
	}
	sub := "/v1/subscriptions/" + id
	for _, ex := range examplesOf("/v1/subscriptions/{id}", "patch") {
		body, _ := json.Marshal(ex)
		got, b := a.do("PATCH", sub, "application/json", string(body), http.Header{"If-Match": {"*"}}, false)
		if got != 200 {
			t.Fatalf("PATCH example = %d %s", got, b)
		}
		sameKeys(t, "PATCH 200", b, documented("/v1/subscriptions/{id}", "patch", "200"))
	}
	for _, ex := range examplesOf("/v1/subscriptions/{id}/secret/rotate", "post") {
		send("POST", sub+"/secret/rotate", "/v1/subscriptions/{id}/secret/rotate", "200", ex)
	}
	for _, ex := range examplesOf("/v1/subscriptions/{id}/dead-letters/replay", "post") {
		send("POST", sub+"/dead-letters/replay", "/v1/subscriptions/{id}/dead-letters/replay", "202", ex)
	}
	var job struct {
		JobID string `json:"job_id"`
	}
	for _, ex := range examplesOf("/v1/subscriptions/{id}/recover", "post") {
		_ = json.Unmarshal(send("POST", sub+"/recover", "/v1/subscriptions/{id}/recover", "202", recent(ex.(map[string]any))), &job)
	}
	// The answers of the requests without a body.
	for _, c := range []struct{ method, path, docPath, status string }{
		{"GET", "/v1/subscriptions", "/v1/subscriptions", "200"},
		{"GET", sub, "/v1/subscriptions/{id}", "200"},
		{"GET", sub + "/secret", "/v1/subscriptions/{id}/secret", "200"},
		{"POST", sub + "/disable", "/v1/subscriptions/{id}/disable", "200"},
		{"POST", sub + "/enable", "/v1/subscriptions/{id}/enable", "200"},
		{"POST", sub + "/ping", "/v1/subscriptions/{id}/ping", "202"},
		{"GET", sub + "/attempts", "/v1/subscriptions/{id}/attempts", "200"},
		{"GET", sub + "/dead-letters", "/v1/subscriptions/{id}/dead-letters", "200"},
	} {
		got, b := a.json(c.method, c.path, "")
		if fmt.Sprint(got) != c.status {
			t.Fatalf("%s %s = %d %s", c.method, c.path, got, b)
		}
		// Lists may be empty here: their items are compared where the
		// system has some.
		sameKeys(t, c.method+" "+c.docPath+" "+c.status, b, withoutEmptyData(documented(c.docPath, strings.ToLower(c.method), c.status), b))
	}
	eventually(t, 20*time.Second, "the recovery job to be done", func() bool {
		got, b := a.json("GET", "/v1/jobs/"+job.JobID, "")
		if got == 200 && bytes.Contains(b, []byte(`"state":"done"`)) {
			sameKeys(t, "GET /v1/jobs/{job_id} 200", b, documented("/v1/jobs/{job_id}", "get", "200"))
			return true
		}
		return false
	})
	// The ping's attempt is in the log: the items of both attempt lists.
	eventually(t, 10*time.Second, "the ping's attempt", func() bool {
		_, b := a.json("GET", sub+"/attempts", "")
		var l struct {
			Data []struct {
				EventID string `json:"event_id"`
			} `json:"data"`
		}
		if json.Unmarshal(b, &l) != nil || len(l.Data) == 0 {
			return false
		}
		sameKeys(t, "GET /v1/subscriptions/{id}/attempts 200", b, documented("/v1/subscriptions/{id}/attempts", "get", "200"))
		_, b = a.json("GET", "/v1/events/"+l.Data[0].EventID+"/attempts", "")
		sameKeys(t, "GET /v1/events/{event_id}/attempts 200", b, documented("/v1/events/{event_id}/attempts", "get", "200"))
		return true
	})
}

// withoutEmptyData is the documented example, with its items left out when
// the real list has none.
func withoutEmptyData(documented any, got []byte) any {
	d, ok := documented.(map[string]any)
	if !ok || !bytes.Contains(got, []byte(`"data":[]`)) {
		return documented
	}
	out := map[string]any{}
	for k, v := range d {
		out[k] = v
	}
	out["data"] = []any{}
	return out
}

// adminProducers returns a request for every status the admin API
// documents, keyed "METHOD path status" like the other producers, and the
// 503s, which need NATS gone.
func adminProducers(t *testing.T, a *adminAPI) (producers, outage map[string]func() int) {
	t.Helper()
	oversized := `{"description":"` + strings.Repeat("x", 70<<10) + `"}`
	unknownSub := "/v1/subscriptions/sub_" + uuid.Must(uuid.NewV7()).String()
	unknownJob := "/v1/jobs/job_" + uuid.Must(uuid.NewV7()).String()
	stale := http.Header{"If-Match": {`"999999999"`}}
	status := func(code int, _ []byte) int { return code }
	since := func() string { return time.Now().Add(-time.Hour).UTC().Format(time.RFC3339) }

	// One subscription and one job for the reads, made now, so that the
	// outage requests need nothing from NATS but their answer.
	fixed := a.subscription()
	_, b := a.json("POST", "/v1/subscriptions/"+fixed+"/recover", `{"since":"`+since()+`"}`)
	var job struct {
		JobID string `json:"job_id"`
	}
	if err := json.Unmarshal(b, &job); err != nil || job.JobID == "" {
		t.Fatalf("recover = %s", b)
	}

	type route struct {
		method, path string
		// ok is the body of a request that succeeds; fresh makes it run
		// on a subscription of its own, since it changes it.
		ok         string
		fresh      bool
		okHeader   http.Header
		unknown422 func(path string) (string, string) // path and body of a 422
		hasBody    bool
		hasIfMatch bool
		success    string
	}
	q422 := func(query string) func(string) (string, string) {
		return func(p string) (string, string) { return p + query, "" }
	}
	b422 := func(body string) func(string) (string, string) {
		return func(p string) (string, string) { return p, body }
	}
	routes := []route{
		{method: "POST", path: "/v1/subscriptions", ok: `{"url":"http://127.0.0.1:1/docs","event_types":["order.paid"]}`, success: "201",
			unknown422: b422(`{"url":"http://10.0.0.7/","event_types":["order.paid"]}`), hasBody: true},
		{method: "GET", path: "/v1/subscriptions", success: "200", unknown422: q422("?limit=0")},
		{method: "GET", path: "/v1/subscriptions/{id}", success: "200"},
		{method: "PATCH", path: "/v1/subscriptions/{id}", ok: `{"description":"docs"}`, okHeader: http.Header{"If-Match": {"*"}}, success: "200",
			unknown422: b422(`{"rate_limit_per_s":0}`), hasBody: true, hasIfMatch: true},
		{method: "DELETE", path: "/v1/subscriptions/{id}", fresh: true, success: "204", hasIfMatch: true},
		{method: "POST", path: "/v1/subscriptions/{id}/enable", fresh: true, success: "200", unknown422: b422(`{"reason":"docs"}`), hasBody: true, hasIfMatch: true},
		{method: "POST", path: "/v1/subscriptions/{id}/disable", fresh: true, success: "200", unknown422: b422(`{"reason":"docs"}`), hasBody: true, hasIfMatch: true},
		{method: "GET", path: "/v1/subscriptions/{id}/secret", success: "200"},
		{method: "POST", path: "/v1/subscriptions/{id}/secret/rotate", fresh: true, ok: `{"grace":"1h"}`, success: "200",
			unknown422: b422(`{"grace":"1y"}`), hasBody: true, hasIfMatch: true},
		{method: "POST", path: "/v1/subscriptions/{id}/ping", success: "202", unknown422: b422(`{"url":"http://127.0.0.1:2/"}`), hasBody: true},
		{method: "GET", path: "/v1/subscriptions/{id}/attempts", success: "200", unknown422: q422("?outcome=sent")},
		{method: "GET", path: "/v1/events/{event_id}/attempts", success: "200", unknown422: q422("?limit=0")},
		{method: "GET", path: "/v1/subscriptions/{id}/dead-letters", success: "200", unknown422: q422("?limit=0")},
		{method: "POST", path: "/v1/subscriptions/{id}/dead-letters/replay", ok: `{}`, success: "202",
			unknown422: b422(`{"event_ids":[]}`), hasBody: true},
		{method: "POST", path: "/v1/subscriptions/{id}/recover", ok: `{"since":"SINCE"}`, success: "202",
			unknown422: b422(`{"since":"2000-01-01T00:00:00Z"}`), hasBody: true},
		{method: "GET", path: "/v1/jobs/{job_id}", success: "200"},
	}
	producers, outage = map[string]func() int{}, map[string]func() int{}
	for _, r := range routes {
		key := r.method + " " + r.path + " "
		at := func(id string) string {
			p := strings.ReplaceAll(r.path, "{id}", id)
			p = strings.ReplaceAll(p, "{event_id}", "evt_0193a5b2-7c1e-7d3a-9f00-1b2c3d4e5f61")
			return strings.ReplaceAll(p, "{job_id}", job.JobID)
		}
		path := func() string {
			if r.fresh {
				return at(a.subscription())
			}
			return at(fixed)
		}
		okBody := func() string { return strings.ReplaceAll(r.ok, "SINCE", since()) }
		producers[key+r.success] = func() int {
			ct := ""
			if r.ok != "" {
				ct = "application/json"
			}
			return status(a.do(r.method, path(), ct, okBody(), r.okHeader, false))
		}
		outage[key+"503"] = func() int {
			ct := ""
			if r.ok != "" {
				ct = "application/json"
			}
			return status(a.do(r.method, at(fixed), ct, okBody(), r.okHeader, false))
		}
		producers[key+"401"] = func() int { return status(a.do(r.method, at(fixed), "", "", nil, true)) }
		if strings.Contains(r.path, "{") {
			producers[key+"404"] = func() int {
				p := strings.Replace(at(fixed), "/v1/subscriptions/"+fixed, unknownSub, 1)
				p = strings.Replace(p, "/v1/jobs/"+job.JobID, unknownJob, 1)
				p = strings.Replace(p, "/v1/events/evt_0193a5b2-7c1e-7d3a-9f00-1b2c3d4e5f61", "/v1/events/*", 1)
				ct := ""
				if r.ok != "" {
					ct = "application/json"
				}
				return status(a.do(r.method, p, ct, okBody(), r.okHeader, false))
			}
		}
		if r.unknown422 != nil {
			producers[key+"422"] = func() int {
				p, body := r.unknown422(path())
				ct := ""
				if body != "" {
					ct = "application/json"
				}
				return status(a.do(r.method, p, ct, body, http.Header{"If-Match": {"*"}}, false))
			}
		}
		if r.hasBody {
			producers[key+"400"] = func() int {
				return status(a.do(r.method, path(), "application/json", `{`, http.Header{"If-Match": {"*"}}, false))
			}
			producers[key+"413"] = func() int {
				return status(a.do(r.method, path(), "application/json", oversized, http.Header{"If-Match": {"*"}}, false))
			}
			producers[key+"415"] = func() int {
				return status(a.do(r.method, path(), "text/plain", `{}`, http.Header{"If-Match": {"*"}}, false))
			}
		}
		if r.hasIfMatch {
			producers[key+"412"] = func() int {
				ct := ""
				if r.ok != "" {
					ct = "application/json"
				}
				return status(a.do(r.method, path(), ct, okBody(), stale, false))
			}
		}
	}
	producers["PATCH /v1/subscriptions/{id} 428"] = func() int {
		return status(a.json("PATCH", "/v1/subscriptions/"+fixed, `{"description":"docs"}`))
	}
	producers["POST /v1/subscriptions/{id}/secret/rotate 409"] = func() int {
		p := "/v1/subscriptions/" + a.subscription() + "/secret/rotate"
		for range 4 {
			a.json("POST", p, `{"grace":"1h"}`)
		}
		return status(a.json("POST", p, `{"grace":"1h"}`))
	}
	return producers, outage
}
