package admin_test

import (
	"encoding/base64"
	"fmt"
	"strings"
	"testing"

	"github.com/jethook/jethook/dispatcher/internal/subscription"
)

// TestHostileRequests: every refusal is problem+json with the right status
// (and the failing field where there is one), and none changes the
// registry.
func TestHostileRequests(t *testing.T) {
	a := startAPI(t)
	s, tag := a.create(validBody)
	sub := "/v1/subscriptions/" + s.ID
	// A stale ETag: the subscription changed after it was read.
	r := a.do(request{method: "PATCH", path: sub, header: map[string]string{"If-Match": tag}, body: `{"description":"x"}`})
	if r.status != 200 {
		t.Fatalf("setup PATCH = %d %s", r.status, r.body)
	}
	stale := tag
	unknown, _ := subscription.NewID()
	missing := "/v1/subscriptions/" + unknown

	big := `{"url":"https://hooks.example.com/in","event_types":["order.paid"],"description":"` + strings.Repeat("x", 70<<10) + `"}`
	huge := `{"description":"` + strings.Repeat("x", 10<<20) + `"}`
	noAuth := func(method, path string) request { return request{method: method, path: path, noAuth: true} }
	withAuth := func(method, path, value string) request {
		return request{method: method, path: path, header: map[string]string{"Authorization": value}}
	}
	json := func(method, path, body string) request { return request{method: method, path: path, body: body} }
	ifMatch := func(method, path, etag, body string) request {
		return request{method: method, path: path, body: body, header: map[string]string{"If-Match": etag}}
	}
	typed := func(method, path, contentType, body string) request {
		return request{method: method, path: path, body: body, header: map[string]string{"Content-Type": contentType, "If-Match": "*"}}
	}

	tests := []hostileCase{
		// Authentication, on every endpoint, before anything else.
		{name: "create without a token", req: noAuth("POST", "/v1/subscriptions"), status: 401},
		{name: "list without a token", req: noAuth("GET", "/v1/subscriptions"), status: 401},
		{name: "get without a token", req: noAuth("GET", sub), status: 401},
		{name: "patch without a token", req: noAuth("PATCH", sub), status: 401},
		{name: "delete without a token", req: noAuth("DELETE", sub), status: 401},
		{name: "enable without a token", req: noAuth("POST", sub+"/enable"), status: 401},
		{name: "disable without a token", req: noAuth("POST", sub+"/disable"), status: 401},
		{name: "secret without a token", req: noAuth("GET", sub+"/secret"), status: 401},
		{name: "rotate without a token", req: noAuth("POST", sub+"/secret/rotate"), status: 401},
		{name: "unknown route without a token", req: noAuth("GET", "/v1/nothing-here"), status: 401},
		{name: "wrong token", req: withAuth("GET", sub+"/secret", "Bearer "+strings.Replace(token, "a", "b", 1)), status: 401},
		{name: "token prefix", req: withAuth("GET", sub+"/secret", "Bearer "+token[:len(token)-1]), status: 401},
		{name: "token with more", req: withAuth("GET", sub+"/secret", "Bearer "+token+"x"), status: 401},
		{name: "basic scheme", req: withAuth("GET", "/v1/subscriptions", "Basic "+base64.StdEncoding.EncodeToString([]byte("admin:"+token))), status: 401},
		{name: "scheme without token", req: withAuth("GET", "/v1/subscriptions", "Bearer"), status: 401},
		{name: "token without scheme", req: withAuth("GET", "/v1/subscriptions", token), status: 401},
		{name: "two spaces", req: withAuth("DELETE", sub, "Bearer  "+token), status: 401},
		{name: "create with a wrong token and a valid body", req: request{method: "POST", path: "/v1/subscriptions", body: validBody,
			header: map[string]string{"Authorization": "Bearer nope"}}, status: 401},

		// Create: malformed, unknown, wrong types, bad values, size, media type.
		{name: "create malformed", req: json("POST", "/v1/subscriptions", `{"url":`), status: 400},
		{name: "create empty body", req: json("POST", "/v1/subscriptions", ``), status: 415},
		{name: "create empty JSON body", req: typed("POST", "/v1/subscriptions", "application/json", ""), status: 400},
		{name: "create duplicate key", req: json("POST", "/v1/subscriptions", `{"url":"https://a.example/","url":"https://b.example/","event_types":["order.paid"]}`), status: 400},
		{name: "create trailing data", req: json("POST", "/v1/subscriptions", validBody+`{}`), status: 400},
		{name: "create not UTF-8", req: json("POST", "/v1/subscriptions", "{\"url\":\"https://a.example/\xfe\",\"event_types\":[\"order.paid\"]}"), status: 400},
		{name: "create array", req: json("POST", "/v1/subscriptions", `[`+validBody+`]`), status: 422, field: "body"},
		{name: "create unknown field", req: json("POST", "/v1/subscriptions", `{"url":"https://a.example/","event_types":["order.paid"],"urll":"x"}`), status: 422, field: "urll"},
		{name: "create with a secret", req: json("POST", "/v1/subscriptions", `{"url":"https://a.example/","event_types":["order.paid"],"secret":"whsec_AAAAAAAAAAAAAAAAAAAAAAAA"}`), status: 422, field: "secret"},
		{name: "create with a status", req: json("POST", "/v1/subscriptions", `{"url":"https://a.example/","event_types":["order.paid"],"status":"disabled"}`), status: 422, field: "status"},
		{name: "create url number", req: json("POST", "/v1/subscriptions", `{"url":443,"event_types":["order.paid"]}`), status: 422, field: "url"},
		{name: "create missing url", req: json("POST", "/v1/subscriptions", `{"event_types":["order.paid"]}`), status: 422, field: "url"},
		{name: "create refused address", req: json("POST", "/v1/subscriptions", `{"url":"http://169.254.169.254/latest/meta-data","event_types":["order.paid"]}`), status: 422, field: "url"},
		{name: "create private address", req: json("POST", "/v1/subscriptions", `{"url":"http://[::ffff:10.0.0.1]/","event_types":["order.paid"]}`), status: 422, field: "url"},
		{name: "create scheme", req: json("POST", "/v1/subscriptions", `{"url":"gopher://a.example/","event_types":["order.paid"]}`), status: 422, field: "url"},
		{name: "create userinfo", req: json("POST", "/v1/subscriptions", `{"url":"https://u:p@a.example/","event_types":["order.paid"]}`), status: 422, field: "url"},
		{name: "create unknown type", req: json("POST", "/v1/subscriptions", `{"url":"https://a.example/","event_types":["order.refunded"]}`), status: 422, field: "event_types"},
		{name: "create event types string", req: json("POST", "/v1/subscriptions", `{"url":"https://a.example/","event_types":"order.paid"}`), status: 422, field: "event_types"},
		{name: "create rate string", req: json("POST", "/v1/subscriptions", `{"url":"https://a.example/","event_types":["order.paid"],"rate_limit_per_s":"10"}`), status: 422, field: "rate_limit_per_s"},
		{name: "create in flight too high", req: json("POST", "/v1/subscriptions", `{"url":"https://a.example/","event_types":["order.paid"],"max_in_flight":257}`), status: 422, field: "max_in_flight"},
		{name: "create metadata number", req: json("POST", "/v1/subscriptions", `{"url":"https://a.example/","event_types":["order.paid"],"metadata":{"a":1}}`), status: 422, field: "metadata"},
		{name: "create over 64 KiB", req: json("POST", "/v1/subscriptions", big), status: 413},
		{name: "create 10 MiB", req: json("POST", "/v1/subscriptions", huge), status: 413},
		{name: "create text/plain", req: typed("POST", "/v1/subscriptions", "text/plain", validBody), status: 415},
		{name: "create form", req: typed("POST", "/v1/subscriptions", "application/x-www-form-urlencoded", "url=https://a.example/"), status: 415},
		{name: "create latin-1", req: typed("POST", "/v1/subscriptions", "application/json; charset=iso-8859-1", validBody), status: 415},
		{name: "create gzip", req: request{method: "POST", path: "/v1/subscriptions", body: validBody, header: map[string]string{"Content-Encoding": "gzip"}}, status: 415},
		{name: "create merge-patch type", req: typed("POST", "/v1/subscriptions", "application/merge-patch+json", validBody), status: 415},

		// List: bad limits and cursors, unknown parameters.
		{name: "list limit 0", req: json("GET", "/v1/subscriptions?limit=0", ""), status: 422, field: "limit"},
		{name: "list limit 501", req: json("GET", "/v1/subscriptions?limit=501", ""), status: 422, field: "limit"},
		{name: "list limit word", req: json("GET", "/v1/subscriptions?limit=ten", ""), status: 422, field: "limit"},
		{name: "list limit fraction", req: json("GET", "/v1/subscriptions?limit=1.5", ""), status: 422, field: "limit"},
		{name: "list limit signed", req: json("GET", "/v1/subscriptions?limit=+5", ""), status: 422, field: "limit"},
		{name: "list limit empty", req: json("GET", "/v1/subscriptions?limit=", ""), status: 422, field: "limit"},
		{name: "list limit twice", req: json("GET", "/v1/subscriptions?limit=5&limit=6", ""), status: 422, field: "limit"},
		{name: "list cursor garbage", req: json("GET", "/v1/subscriptions?cursor=%%%", ""), status: 422, field: "cursor"},
		{name: "list cursor not ours", req: json("GET", "/v1/subscriptions?cursor="+base64.RawURLEncoding.EncodeToString([]byte("orders")), ""), status: 422, field: "cursor"},
		{name: "list cursor raw id", req: json("GET", "/v1/subscriptions?cursor="+s.ID, ""), status: 422, field: "cursor"},
		{name: "list unknown parameter", req: json("GET", "/v1/subscriptions?limt=5", ""), status: 422, field: "limt"},

		// Ids: malformed or unknown, on every route with one.
		{name: "get bad id", req: json("GET", "/v1/subscriptions/nope", ""), status: 404},
		{name: "get unknown id", req: json("GET", missing, ""), status: 404},
		{name: "get upper-case id", req: json("GET", "/v1/subscriptions/"+strings.ToUpper(s.ID), ""), status: 404},
		{name: "get encoded id", req: json("GET", "/v1/subscriptions/sub%5F"+s.ID[4:], ""), status: 404},
		{name: "get traversal", req: json("GET", "/v1/subscriptions/..%2F..%2Fhealthz", ""), status: 404},
		{name: "get absent notifier", req: json("GET", "/v1/subscriptions/sub_notifier", ""), status: 404},
		{name: "patch bad id", req: ifMatch("PATCH", "/v1/subscriptions/sub_x", "*", `{"description":"x"}`), status: 404},
		{name: "patch unknown id", req: ifMatch("PATCH", missing, "*", `{"description":"x"}`), status: 404},
		{name: "delete bad id", req: json("DELETE", "/v1/subscriptions/sub_*", ""), status: 404},
		{name: "delete unknown id", req: json("DELETE", missing, ""), status: 404},
		{name: "enable unknown id", req: json("POST", missing+"/enable", ""), status: 404},
		{name: "disable bad id", req: json("POST", "/v1/subscriptions/x/disable", ""), status: 404},
		{name: "secret unknown id", req: json("GET", missing+"/secret", ""), status: 404},
		{name: "rotate bad id", req: json("POST", "/v1/subscriptions/"+s.ID+"0/secret/rotate", ""), status: 404},

		// Patch: preconditions first, then the body.
		{name: "patch without If-Match", req: json("PATCH", sub, `{"description":"x"}`), status: 428},
		{name: "patch stale If-Match", req: ifMatch("PATCH", sub, stale, `{"description":"x"}`), status: 412},
		{name: "patch unquoted If-Match", req: ifMatch("PATCH", sub, strings.Trim(stale, `"`), `{"description":"x"}`), status: 412},
		{name: "patch weak If-Match", req: ifMatch("PATCH", sub, "W/"+stale, `{"description":"x"}`), status: 412},
		{name: "patch If-Match list", req: ifMatch("PATCH", sub, stale+`, "999999"`, `{"description":"x"}`), status: 412},
		{name: "patch malformed", req: ifMatch("PATCH", sub, "*", `{"description":"x"`), status: 400},
		{name: "patch duplicate key", req: ifMatch("PATCH", sub, "*", `{"description":"x","description":"y"}`), status: 400},
		{name: "patch unknown field", req: ifMatch("PATCH", sub, "*", `{"descripton":"x"}`), status: 422, field: "descripton"},
		{name: "patch status", req: ifMatch("PATCH", sub, "*", `{"status":"disabled"}`), status: 422, field: "status"},
		{name: "patch id", req: ifMatch("PATCH", sub, "*", `{"id":"sub_notifier"}`), status: 422, field: "id"},
		{name: "patch url null", req: ifMatch("PATCH", sub, "*", `{"url":null}`), status: 422, field: "url"},
		{name: "patch url loopback v6", req: ifMatch("PATCH", sub, "*", `{"url":"http://[::1]:8080/"}`), status: 422, field: "url"},
		{name: "patch description object", req: ifMatch("PATCH", sub, "*", `{"description":{}}`), status: 422, field: "description"},
		{name: "patch event types empty", req: ifMatch("PATCH", sub, "*", `{"event_types":[]}`), status: 422, field: "event_types"},
		{name: "patch null body", req: ifMatch("PATCH", sub, "*", `null`), status: 422, field: "body"},
		{name: "patch text/plain", req: typed("PATCH", sub, "text/plain", `{"description":"x"}`), status: 415},
		{name: "patch over 64 KiB", req: ifMatch("PATCH", sub, "*", big), status: 413},

		// Delete, enable, disable, rotate: stale revisions and bodies.
		{name: "delete stale If-Match", req: ifMatch("DELETE", sub, stale, ""), status: 412},
		{name: "disable stale If-Match", req: ifMatch("POST", sub+"/disable", stale, ""), status: 412},
		{name: "enable body field", req: json("POST", sub+"/enable", `{"reason":"because"}`), status: 422, field: "reason"},
		{name: "disable malformed body", req: json("POST", sub+"/disable", `{`), status: 400},
		{name: "disable text body", req: typed("POST", sub+"/disable", "text/plain", "please"), status: 415},
		{name: "rotate grace word", req: json("POST", sub+"/secret/rotate", `{"grace":"forever"}`), status: 422, field: "grace"},
		{name: "rotate grace number", req: json("POST", sub+"/secret/rotate", `{"grace":86400}`), status: 422, field: "grace"},
		{name: "rotate grace negative", req: json("POST", sub+"/secret/rotate", `{"grace":"-1h"}`), status: 422, field: "grace"},
		{name: "rotate grace too long", req: json("POST", sub+"/secret/rotate", `{"grace":"169h"}`), status: 422, field: "grace"},
		{name: "rotate grace in days", req: json("POST", sub+"/secret/rotate", `{"grace":"1d"}`), status: 422, field: "grace"},
		{name: "rotate unknown field", req: json("POST", sub+"/secret/rotate", `{"grace":"1h","revoke":true}`), status: 422, field: "revoke"},
		{name: "rotate malformed", req: json("POST", sub+"/secret/rotate", `{"grace":"1h"`), status: 400},
		{name: "rotate array", req: json("POST", sub+"/secret/rotate", `["1h"]`), status: 422, field: "body"},
		{name: "rotate stale If-Match", req: ifMatch("POST", sub+"/secret/rotate", stale, `{"grace":"1h"}`), status: 412},
		{name: "rotate over 64 KiB", req: json("POST", sub+"/secret/rotate", big), status: 413},

		// Methods the routes do not have.
		{name: "PUT a subscription", req: json("PUT", sub, validBody), status: 405},
		{name: "DELETE the collection", req: json("DELETE", "/v1/subscriptions", ""), status: 405},
		{name: "GET rotate", req: json("GET", sub+"/secret/rotate", ""), status: 405},
		{name: "unknown route", req: json("GET", "/v1/nothing-here", ""), status: 404},
	}
	a.refuses(t, tests, func() string { return fmt.Sprint(a.lastSeq()) })
	// And the subscription is as it was.
	a.t = t
	r = a.do(request{method: "GET", path: sub})
	if got := decode[subscriptionView](t, r, 200); got.Description != "x" || got.Status != "enabled" || r.header.Get("ETag") == stale {
		t.Fatalf("after the hostile requests: %s", r.body)
	}
	t.Logf("%d hostile cases", len(tests))
}

// hostileCase is a request the API must refuse.
type hostileCase struct {
	name   string
	req    request
	status int
	field  string // a key the errors map must have
}

// refuses sends each case and checks that it is answered problem+json
// with its status (and field), a 401 with a Bearer challenge, and that
// state, a picture of what the API can change, is the same after it.
func (a *api) refuses(t *testing.T, cases []hostileCase, state func() string) {
	t.Helper()
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			a.t = t
			before := state()
			r := a.do(tt.req)
			if r.status != tt.status {
				t.Fatalf("status %d, want %d: %s", r.status, tt.status, r.body)
			}
			p := decodeProblem(t, r)
			if tt.field != "" {
				if _, ok := p.Errors[tt.field]; !ok {
					t.Errorf("errors %v lack %q", p.Errors, tt.field)
				}
			}
			if tt.status == 401 && !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer ") {
				t.Errorf("401 without a Bearer challenge: %q", r.header.Get("WWW-Authenticate"))
			}
			if after := state(); after != before {
				t.Errorf("something changed: %s → %s", before, after)
			}
		})
	}
	a.t = t
}
