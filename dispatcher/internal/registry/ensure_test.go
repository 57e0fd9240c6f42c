package registry_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/jethook/jethook/dispatcher/internal/registry"
	"github.com/jethook/jethook/dispatcher/internal/subscription"
	"github.com/jethook/jethook/shared/webhook"
)

func secret(t *testing.T) string {
	t.Helper()
	s, err := webhook.GenerateSecret()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func secretTexts(secrets []registry.Secret) []string {
	var out []string
	for _, s := range secrets {
		out = append(out, s.Text)
	}
	return out
}

func TestEnsureNotifier(t *testing.T) {
	e := start(t)
	s1 := secret(t)
	url := "http://127.0.0.1:8081/webhook/order-paid"

	en, outcome, err := e.reg.Ensure(ctx(t), registry.Notifier(url, []string{s1}, 0))
	if err != nil || outcome != registry.EnsureCreated {
		t.Fatalf("first Ensure = %s, %v", outcome, err)
	}
	sub := en.Subscription
	if sub.ID != "sub_notifier" || sub.URL != url || !slices.Equal(sub.EventTypes, []string{"order.paid"}) ||
		sub.Status != subscription.StatusEnabled || sub.RateLimitPerS != subscription.MaxRateLimitPerS {
		t.Fatalf("ensured %+v", sub)
	}
	if got := secretTexts(en.Secrets(e.clock.Now())); !slices.Equal(got, []string{s1}) {
		t.Fatal("the notifier does not sign with the secret given")
	}

	// Every further start with the same settings writes nothing.
	again, outcome, err := e.reg.Ensure(ctx(t), registry.Notifier(url, []string{s1}, 0))
	if err != nil || outcome != registry.EnsureUnchanged || again.Revision != en.Revision {
		t.Fatalf("second Ensure = %s (rev %d → %d), %v", outcome, en.Revision, again.Revision, err)
	}

	// An operator's changes other than URL and secret stay; the
	// environment's URL and secret win.
	desc := "mine"
	if _, _, err := e.reg.SetStatus(ctx(t), sub.ID, 0, subscription.StatusDisabled, subscription.ReasonManual); err != nil {
		t.Fatal(err)
	}
	if _, err := e.reg.Update(ctx(t), sub.ID, 0, subscription.Fields{Description: &desc}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.reg.Rotate(ctx(t), sub.ID, 0, registry.DefaultGrace); err != nil {
		t.Fatal(err)
	}
	s2, s3 := secret(t), secret(t)
	url2 := "http://127.0.0.1:9091/in"
	up, outcome, err := e.reg.Ensure(ctx(t), registry.Notifier(url2, []string{s2, s3}, 0))
	if err != nil || outcome != registry.EnsureUpdated {
		t.Fatalf("Ensure with a new URL and secrets = %s, %v", outcome, err)
	}
	if up.Subscription.URL != url2 || !slices.Equal(secretTexts(up.Secrets(e.clock.Now())), []string{s2, s3}) {
		t.Fatalf("after Ensure: url %s, %d secrets", up.Subscription.URL, len(up.Secrets(e.clock.Now())))
	}
	if up.Subscription.Status != subscription.StatusDisabled || up.Subscription.Description != "mine" {
		t.Fatalf("Ensure undid the operator's changes: %+v", up.Subscription)
	}
	// The same secrets in another order are the same configuration.
	if _, outcome, _ := e.reg.Ensure(ctx(t), registry.Notifier(url2, []string{s3, s2}, 0)); outcome != registry.EnsureUnchanged {
		t.Fatalf("Ensure with reordered secrets = %s", outcome)
	}
	// Only the secret changes.
	if _, outcome, _ := e.reg.Ensure(ctx(t), registry.Notifier(url2, []string{s3}, 0)); outcome != registry.EnsureUpdated {
		t.Fatalf("Ensure with one secret less = %s", outcome)
	}
}

func TestEnsureFromReplicasAtOnce(t *testing.T) {
	e := start(t)
	s1 := secret(t)
	replicas := []*registry.Registry{e.reg, newRegistry(t, e.js, testKey, nil), newRegistry(t, e.js, testKey, nil)}
	type result struct {
		outcome registry.EnsureOutcome
		err     error
	}
	results := make(chan result, len(replicas))
	for _, r := range replicas {
		go func() {
			_, o, err := r.Ensure(ctx(t), registry.Notifier("https://n.example/", []string{s1}, 0))
			results <- result{o, err}
		}()
	}
	created := 0
	for range replicas {
		res := <-results
		if res.err != nil {
			t.Fatalf("Ensure: %v", res.err)
		}
		if res.outcome == registry.EnsureCreated {
			created++
		}
	}
	if created != 1 {
		t.Fatalf("%d replicas created the subscription, want 1", created)
	}
}

func TestEnsureRefusesBadConfiguration(t *testing.T) {
	e := start(t)
	for name, f := range map[string]registry.Fixed{
		"no secret":    registry.Notifier("https://n.example/", nil, 0),
		"bad secret":   registry.Notifier("https://n.example/", []string{"hunter2"}, 0),
		"bad id":       {ID: "notifier", URL: "https://n.example/", Secrets: []string{secret(t)}},
		"unknown type": {ID: "sub_notifier", URL: "https://n.example/", EventTypes: []string{"order.lost"}, Secrets: []string{secret(t)}},
	} {
		if _, _, err := e.reg.Ensure(ctx(t), f); !errors.Is(err, registry.ErrInvalid) {
			t.Errorf("%s: Ensure = %v, want ErrInvalid", name, err)
		}
	}
	if _, err := e.reg.Get(ctx(t), "sub_notifier"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("a refused Ensure stored something: %v", err)
	}
}
