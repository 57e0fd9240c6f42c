package admin_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jethook/jethook/dispatcher/internal/subscription"
)

const validBody = `{"url":"https://hooks.example.com/in","event_types":["order.paid"]}`

func TestSubscriptionLifecycle(t *testing.T) {
	a := startAPI(t)

	// Create: 201 with Location, ETag, the defaults, and the secret.
	r := a.do(request{method: "POST", path: "/v1/subscriptions", body: `{"url":"https://hooks.example.com/in","event_types":["order.paid"],
		"description":"Shop","metadata":{"team":"billing"}}`})
	s := decode[subscriptionView](t, r, 201)
	if s.Secret == nil || !strings.HasPrefix(*s.Secret, "whsec_") {
		t.Fatalf("201 without the secret: %s", r.body)
	}
	secret := *s.Secret
	if !subscription.ValidID(s.ID) || s.Status != "enabled" || s.DisabledReason != nil || s.Description != "Shop" ||
		s.RateLimitPerS != subscription.DefaultRateLimitPerS || s.MaxInFlight != subscription.DefaultMaxInFlight ||
		s.Metadata["team"] != "billing" || s.CreatedAt.IsZero() || !s.UpdatedAt.Equal(s.CreatedAt) {
		t.Fatalf("created %s", r.body)
	}
	if loc := r.header.Get("Location"); loc != "/v1/subscriptions/"+s.ID {
		t.Errorf("Location %q", loc)
	}
	if r.header.Get("Cache-Control") != "no-store" {
		t.Error("the answer with the secret may be cached")
	}
	tag := r.header.Get("ETag")
	if !strings.HasPrefix(tag, `"`) || !strings.HasSuffix(tag, `"`) || len(tag) < 3 {
		t.Fatalf("ETag %q", tag)
	}

	// Get and list never show the secret.
	r = a.do(request{method: "GET", path: "/v1/subscriptions/" + s.ID})
	got := decode[subscriptionView](t, r, 200)
	if got.ID != s.ID || r.header.Get("ETag") != tag {
		t.Fatalf("GET = %s, ETag %q (want %q)", r.body, r.header.Get("ETag"), tag)
	}
	noSecret(t, r.body, secret)
	r = a.do(request{method: "GET", path: "/v1/subscriptions"})
	noSecret(t, r.body, secret)

	// Patch: If-Match with the ETag, a new ETag back.
	r = a.do(request{method: "PATCH", path: "/v1/subscriptions/" + s.ID, header: map[string]string{"If-Match": tag},
		body: `{"description":"Shop 2","rate_limit_per_s":5,"metadata":null}`})
	patched := decode[subscriptionView](t, r, 200)
	newTag := r.header.Get("ETag")
	if patched.Description != "Shop 2" || patched.RateLimitPerS != 5 || len(patched.Metadata) != 0 || newTag == tag ||
		!patched.CreatedAt.Equal(s.CreatedAt) || patched.UpdatedAt.Before(s.UpdatedAt) {
		t.Fatalf("PATCH = %s, ETag %s", r.body, newTag)
	}
	noSecret(t, r.body, secret)
	// The old ETag is stale now.
	r = a.do(request{method: "PATCH", path: "/v1/subscriptions/" + s.ID, header: map[string]string{"If-Match": tag}, body: `{"description":"lost"}`})
	if r.status != 412 {
		t.Fatalf("PATCH with a stale ETag = %d %s", r.status, r.body)
	}
	// If-Match: * changes whatever is current; merge-patch+json is JSON too.
	r = a.do(request{method: "PATCH", path: "/v1/subscriptions/" + s.ID,
		header: map[string]string{"If-Match": "*", "Content-Type": "application/merge-patch+json"}, body: `{"event_types":["*"]}`})
	if p := decode[subscriptionView](t, r, 200); !slices.Equal(p.EventTypes, []string{"*"}) || p.Description != "Shop 2" {
		t.Fatalf("PATCH If-Match * = %s", r.body)
	}

	// Disable and enable: 200 with the subscription; the hook hears each
	// real change once.
	r = a.do(request{method: "POST", path: "/v1/subscriptions/" + s.ID + "/disable"})
	if d := decode[subscriptionView](t, r, 200); d.Status != "disabled" || d.DisabledReason == nil || *d.DisabledReason != "manual" {
		t.Fatalf("disable = %s", r.body)
	}
	r = a.do(request{method: "POST", path: "/v1/subscriptions/" + s.ID + "/disable", body: `{}`})
	decode[subscriptionView](t, r, 200)
	r = a.do(request{method: "POST", path: "/v1/subscriptions/" + s.ID + "/enable"})
	if e := decode[subscriptionView](t, r, 200); e.Status != "enabled" || e.DisabledReason != nil || bytes.Contains(r.body, []byte("disabled_reason")) {
		t.Fatalf("enable = %s", r.body)
	}
	a.mu.Lock()
	var heard []string
	for _, e := range a.changes {
		heard = append(heard, string(e.Subscription.Status))
	}
	a.mu.Unlock()
	if !slices.Equal(heard, []string{"disabled", "enabled"}) {
		t.Fatalf("StatusChanged heard %v, want [disabled enabled]", heard)
	}

	// The secret: shown on request, then rotated with a grace period.
	type secretsView struct {
		Secrets []struct {
			Secret    string     `json:"secret"`
			ExpiresAt *time.Time `json:"expires_at"`
		} `json:"secrets"`
	}
	r = a.do(request{method: "GET", path: "/v1/subscriptions/" + s.ID + "/secret"})
	sv := decode[secretsView](t, r, 200)
	if len(sv.Secrets) != 1 || sv.Secrets[0].Secret != secret || sv.Secrets[0].ExpiresAt != nil || !bytes.Contains(r.body, []byte(`"expires_at":null`)) {
		t.Fatalf("GET secret = %s", r.body)
	}
	if r.header.Get("Cache-Control") != "no-store" {
		t.Error("the secret may be cached")
	}
	before := time.Now()
	r = a.do(request{method: "POST", path: "/v1/subscriptions/" + s.ID + "/secret/rotate", body: `{"grace":"2h"}`})
	rot := decode[struct{ Secret string }](t, r, 200)
	if !strings.HasPrefix(rot.Secret, "whsec_") || rot.Secret == secret || r.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("rotate = %s", r.body)
	}
	sv = decode[secretsView](t, a.do(request{method: "GET", path: "/v1/subscriptions/" + s.ID + "/secret"}), 200)
	if len(sv.Secrets) != 2 || sv.Secrets[0].Secret != rot.Secret || sv.Secrets[0].ExpiresAt != nil ||
		sv.Secrets[1].Secret != secret || sv.Secrets[1].ExpiresAt == nil ||
		sv.Secrets[1].ExpiresAt.Before(before.Add(2*time.Hour-time.Minute)) || sv.Secrets[1].ExpiresAt.After(time.Now().Add(2*time.Hour)) {
		t.Fatalf("secrets after rotating with 2h grace: %+v", sv)
	}
	// Without a body: the default grace of 24 h.
	r = a.do(request{method: "POST", path: "/v1/subscriptions/" + s.ID + "/secret/rotate"})
	rot2 := decode[struct{ Secret string }](t, r, 200)
	sv = decode[secretsView](t, a.do(request{method: "GET", path: "/v1/subscriptions/" + s.ID + "/secret"}), 200)
	if len(sv.Secrets) != 3 || sv.Secrets[0].Secret != rot2.Secret || sv.Secrets[1].ExpiresAt == nil ||
		sv.Secrets[1].ExpiresAt.Before(before.Add(24*time.Hour-time.Minute)) {
		t.Fatalf("secrets after a rotation without a body: %+v", sv)
	}
	// Grace 0s retires the others at once (a leaked secret).
	r = a.do(request{method: "POST", path: "/v1/subscriptions/" + s.ID + "/secret/rotate", body: `{"grace":"0s"}`})
	rot3 := decode[struct{ Secret string }](t, r, 200)
	sv = decode[secretsView](t, a.do(request{method: "GET", path: "/v1/subscriptions/" + s.ID + "/secret"}), 200)
	if len(sv.Secrets) != 1 || sv.Secrets[0].Secret != rot3.Secret {
		t.Fatalf("secrets after a rotation with grace 0s: %+v", sv)
	}

	// Delete: 204, then 404.
	if r = a.do(request{method: "DELETE", path: "/v1/subscriptions/" + s.ID}); r.status != 204 || len(r.body) != 0 {
		t.Fatalf("DELETE = %d %s", r.status, r.body)
	}
	if r = a.do(request{method: "GET", path: "/v1/subscriptions/" + s.ID}); r.status != 404 {
		t.Fatalf("GET after DELETE = %d", r.status)
	}
	decodeProblem(t, r)

	// No secret was ever logged.
	for _, sec := range []string{secret, rot.Secret, rot2.Secret, rot3.Secret} {
		if strings.Contains(a.logs.String(), strings.TrimPrefix(sec, "whsec_")) {
			t.Fatal("a secret was logged")
		}
	}
	if strings.Contains(a.logs.String(), token) {
		t.Fatal("the admin token was logged")
	}
}

func noSecret(t *testing.T, body []byte, secret string) {
	t.Helper()
	if bytes.Contains(body, []byte(strings.TrimPrefix(secret, "whsec_"))) || bytes.Contains(body, []byte(`"secret"`)) ||
		bytes.Contains(body, []byte(`"secrets"`)) || bytes.Contains(body, []byte("ciphertext")) {
		t.Fatalf("an answer shows a secret: %s", body)
	}
}

func TestListPages(t *testing.T) {
	a := startAPI(t)
	type page struct {
		Data       []subscriptionView `json:"data"`
		NextCursor *string            `json:"next_cursor"`
	}
	r := a.do(request{method: "GET", path: "/v1/subscriptions"})
	if p := decode[page](t, r, 200); p.Data == nil || len(p.Data) != 0 || p.NextCursor != nil || !bytes.Contains(r.body, []byte(`"next_cursor":null`)) {
		t.Fatalf("empty list = %s", r.body)
	}
	var ids []string
	for i := range 5 {
		s, _ := a.create(fmt.Sprintf(`{"url":"https://h%d.example.com/","event_types":["order.paid"]}`, i))
		ids = append(ids, s.ID)
	}
	var seen []string
	path := "/v1/subscriptions?limit=2"
	for n := 0; ; n++ {
		p := decode[page](t, a.do(request{method: "GET", path: path}), 200)
		if len(p.Data) > 2 {
			t.Fatalf("page of %d with limit 2", len(p.Data))
		}
		for _, s := range p.Data {
			seen = append(seen, s.ID)
			if s.Secret != nil {
				t.Fatal("a list shows a secret")
			}
		}
		if p.NextCursor == nil {
			break
		}
		path = "/v1/subscriptions?limit=2&cursor=" + *p.NextCursor
		if n > 5 {
			t.Fatal("the list never ends")
		}
	}
	if !slices.Equal(seen, ids) {
		t.Fatalf("listed %v, want %v in creation order", seen, ids)
	}
	// The default limit is 50.
	p := decode[page](t, a.do(request{method: "GET", path: "/v1/subscriptions"}), 200)
	if len(p.Data) != 5 || p.NextCursor != nil {
		t.Fatalf("default page: %d entries, next %v", len(p.Data), p.NextCursor)
	}
}

// TestCreateAnswerIsTheContract: exactly the contract's fields, plus the
// secret.
func TestCreateAnswerIsTheContract(t *testing.T) {
	a := startAPI(t)
	r := a.do(request{method: "POST", path: "/v1/subscriptions", body: validBody})
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(decodeBody(t, r, 201), &fields); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range fields {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	want := []string{"created_at", "description", "event_types", "id", "max_in_flight", "metadata", "rate_limit_per_s", "secret", "status", "updated_at", "url"}
	if !slices.Equal(keys, want) {
		t.Fatalf("fields %v, want %v", keys, want)
	}
}

func decodeBody(t *testing.T, r response, status int) []byte {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
	}
	return r.body
}

// TestUnavailableRegistry: before the bucket is provisioned (NATS still
// away at start), requests are answered 503 with Retry-After, not 500.
func TestUnavailableRegistry(t *testing.T) {
	a := startUnprovisioned(t)
	for _, req := range []request{
		{method: "POST", path: "/v1/subscriptions", body: validBody},
		{method: "GET", path: "/v1/subscriptions"},
		{method: "GET", path: "/v1/subscriptions/sub_notifier"},
	} {
		r := a.do(req)
		if r.status != 503 || r.header.Get("Retry-After") == "" {
			t.Fatalf("%s %s = %d (Retry-After %q), want 503 with Retry-After", req.method, req.path, r.status, r.header.Get("Retry-After"))
		}
		decodeProblem(t, r)
	}
}
