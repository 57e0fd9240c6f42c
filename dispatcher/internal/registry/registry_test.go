package registry_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jethook/jethook/dispatcher/internal/registry"
	"github.com/jethook/jethook/dispatcher/internal/subscription"
	"github.com/jethook/jethook/shared/natstest"
	"github.com/jethook/jethook/shared/webhook"
)

func TestUnavailableBeforeProvision(t *testing.T) {
	srv := natstest.RunServer(t)
	_, js := natstest.Connect(t, srv.URL())
	r, err := registry.New(js, testKey, 1, slog.New(slog.DiscardHandler), registry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.Create(ctx(t), fields("https://a.example/")); !errors.Is(err, registry.ErrUnavailable) {
		t.Fatalf("Create before Provision = %v, want ErrUnavailable", err)
	}
	if _, _, err := r.List(ctx(t), "", 10); !errors.Is(err, registry.ErrUnavailable) {
		t.Fatalf("List before Provision = %v, want ErrUnavailable", err)
	}
}

func TestCreateGetSecretsEncryptedAtRest(t *testing.T) {
	e := start(t)
	en, secret := e.create(t, "https://hooks.example.com/in")
	if !strings.HasPrefix(secret, "whsec_") || !subscription.ValidID(en.Subscription.ID) || en.Revision == 0 {
		t.Fatalf("Create = %+v, secret %q…", en, secret[:6])
	}
	if en.Subscription.Status != subscription.StatusEnabled || !en.Subscription.CreatedAt.Equal(e.clock.Now()) {
		t.Fatalf("new subscription %+v", en.Subscription)
	}
	got, err := e.reg.Get(ctx(t), en.Subscription.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Subscription.Equal(en.Subscription) || got.Revision != en.Revision {
		t.Fatalf("Get = %+v, want %+v", got, en)
	}
	if s := got.Secrets(e.clock.Now()); len(s) != 1 || s[0].Text != secret || s[0].ExpiresAt != nil {
		t.Fatalf("Secrets = %v", s)
	}

	// At rest there is neither the secret nor its key material, only a
	// ciphertext.
	kve, err := e.kv(t).Get(ctx(t), en.Subscription.ID)
	if err != nil {
		t.Fatal(err)
	}
	raw := kve.Value()
	if bytes.Contains(raw, []byte(secret)) || bytes.Contains(raw, []byte(strings.TrimPrefix(secret, "whsec_"))) {
		t.Fatalf("the stored value holds the secret: %s", raw)
	}
	var stored struct {
		ID      string `json:"id"`
		Secrets []struct {
			Ciphertext string `json:"ciphertext"`
		} `json:"secrets"`
	}
	if err := json.Unmarshal(raw, &stored); err != nil || len(stored.Secrets) != 1 || stored.Secrets[0].Ciphertext == "" {
		t.Fatalf("stored value %s: %v", raw, err)
	}

	// SigningSecrets signs what a receiver holding the secret verifies.
	signing, err := e.reg.SigningSecrets(ctx(t), en.Subscription.ID)
	if err != nil || len(signing) != 1 {
		t.Fatalf("SigningSecrets = %v, %v", signing, err)
	}
	verifyWith(t, secret, signing, true)
}

// verifyWith checks whether a webhook signed with signing verifies for a
// receiver that knows only secret.
func verifyWith(t *testing.T, secret string, signing []webhook.Secret, want bool) {
	t.Helper()
	key, err := webhook.ParseSecret(secret)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	body := []byte(`{"id":"evt_1"}`)
	sig := webhook.Sign(signing, "evt_1", now, body)
	err = webhook.Verifier{Secrets: []webhook.Secret{key}}.Verify("evt_1", strconv.FormatInt(now.Unix(), 10), sig, body)
	if (err == nil) != want {
		t.Fatalf("verify with the secret: %v, want success %v", err, want)
	}
}

func TestCiphertextBoundToItsSubscription(t *testing.T) {
	e := start(t)
	a, _ := e.create(t, "https://a.example/")
	b, _ := e.create(t, "https://b.example/")
	kv := e.kv(t)
	ra, _ := kv.Get(ctx(t), a.Subscription.ID)
	rb, _ := kv.Get(ctx(t), b.Subscription.ID)

	// Move a's sealed secret into b's record, as someone with write
	// access to the bucket but without the key might.
	var va, vb map[string]json.RawMessage
	_ = json.Unmarshal(ra.Value(), &va)
	_ = json.Unmarshal(rb.Value(), &vb)
	vb["secrets"] = va["secrets"]
	forged, _ := json.Marshal(vb)
	if _, err := kv.Put(ctx(t), b.Subscription.ID, forged); err != nil {
		t.Fatal(err)
	}
	if _, err := e.reg.Get(ctx(t), b.Subscription.ID); !errors.Is(err, registry.ErrUndecryptable) {
		t.Fatalf("Get with a moved ciphertext = %v, want ErrUndecryptable", err)
	}
	if _, err := e.reg.Get(ctx(t), a.Subscription.ID); err != nil {
		t.Fatalf("the original still reads: %v", err)
	}
}

func TestWrongSecretsKey(t *testing.T) {
	e := start(t)
	a, _ := e.create(t, "https://a.example/")
	other := testKey
	other[0] ^= 0xff
	r2 := newRegistry(t, e.js, other, nil)
	_, err := r2.Get(ctx(t), a.Subscription.ID)
	if !errors.Is(err, registry.ErrUndecryptable) || !strings.Contains(err.Error(), "SECRETS_KEY") {
		t.Fatalf("Get under another key = %v, want ErrUndecryptable naming SECRETS_KEY", err)
	}
}

func TestGetUnknown(t *testing.T) {
	e := start(t)
	id, _ := subscription.NewID()
	for _, bad := range []string{id, "sub_notifier", "not-an-id", "sub_*", ""} {
		if _, err := e.reg.Get(ctx(t), bad); !errors.Is(err, registry.ErrNotFound) {
			t.Errorf("Get(%q) = %v, want ErrNotFound", bad, err)
		}
	}
}

func TestList(t *testing.T) {
	e := start(t)
	got, more, err := e.reg.List(ctx(t), "", 50)
	if err != nil || len(got) != 0 || more {
		t.Fatalf("List of an empty registry = %v, %v, %v", got, more, err)
	}
	var ids []string
	for i := range 7 {
		en, _ := e.create(t, "https://h"+string(rune('a'+i))+".example/")
		ids = append(ids, en.Subscription.ID)
	}
	if err := e.reg.Delete(ctx(t), ids[4], 0); err != nil {
		t.Fatal(err)
	}
	want := slices.Delete(slices.Clone(ids), 4, 5)

	var seen []string
	after := ""
	for page := 0; ; page++ {
		got, more, err := e.reg.List(ctx(t), after, 3)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) > 3 {
			t.Fatalf("page %d has %d entries, limit 3", page, len(got))
		}
		for _, en := range got {
			seen = append(seen, en.Subscription.ID)
		}
		if !more {
			break
		}
		after = got[len(got)-1].Subscription.ID
		if page > 5 {
			t.Fatal("List never ends")
		}
	}
	if !slices.Equal(seen, want) {
		t.Fatalf("pages = %v, want %v (id order, without the deleted one)", seen, want)
	}
	// A cursor that is no longer a subscription still places the page.
	got, _, err = e.reg.List(ctx(t), ids[4], 10)
	if err != nil || len(got) != 2 || got[0].Subscription.ID != ids[5] {
		t.Fatalf("List after a deleted id = %v, %v", got, err)
	}
}

func TestUpdateOptimisticConcurrency(t *testing.T) {
	e := start(t)
	en, _ := e.create(t, "https://a.example/")
	id := en.Subscription.ID
	e.clock.Advance(time.Minute)

	desc := "first"
	up, err := e.reg.Update(ctx(t), id, en.Revision, subscription.Fields{Description: &desc})
	if err != nil {
		t.Fatal(err)
	}
	if up.Revision <= en.Revision || up.Subscription.Description != "first" || !up.Subscription.UpdatedAt.Equal(e.clock.Now()) ||
		!up.Subscription.CreatedAt.Equal(en.Subscription.CreatedAt) {
		t.Fatalf("Update = %+v", up)
	}

	// The revision read before the first update is stale now.
	desc2 := "second"
	if _, err := e.reg.Update(ctx(t), id, en.Revision, subscription.Fields{Description: &desc2}); !errors.Is(err, registry.ErrStale) {
		t.Fatalf("Update with a stale revision = %v, want ErrStale", err)
	}
	got, _ := e.reg.Get(ctx(t), id)
	if got.Revision != up.Revision || got.Subscription.Description != "first" {
		t.Fatalf("a stale update changed the subscription: %+v", got)
	}

	// Without a revision, the change applies to whatever is current.
	up2, err := e.reg.Update(ctx(t), id, 0, subscription.Fields{Description: &desc2})
	if err != nil || up2.Subscription.Description != "second" {
		t.Fatalf("unconditional Update = %+v, %v", up2, err)
	}
	// A change to the same values writes nothing.
	same, err := e.reg.Update(ctx(t), id, up2.Revision, subscription.Fields{Description: &desc2})
	if err != nil || same.Revision != up2.Revision {
		t.Fatalf("no-op Update = rev %d, %v; want rev %d unchanged", same.Revision, err, up2.Revision)
	}
	// The secret survives updates.
	if s := same.Secrets(e.clock.Now()); len(s) != 1 {
		t.Fatalf("secrets after updates: %v", s)
	}
}

func TestConcurrentUnconditionalUpdatesSucceed(t *testing.T) {
	e := start(t)
	en, _ := e.create(t, "https://a.example/")
	id := en.Subscription.ID
	other := newRegistry(t, e.js, testKey, nil)
	errs := make(chan error, 2)
	for i, r := range []*registry.Registry{e.reg, other} {
		go func() {
			key := []string{"a", "b"}[i]
			var err error
			for n := range 10 {
				_, err = r.Update(ctx(t), id, 0, subscription.Fields{Metadata: &map[string]string{key: string(rune('0' + n))}})
				if err != nil {
					break
				}
			}
			errs <- err
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatalf("concurrent Update: %v", err)
		}
	}
}

func TestDelete(t *testing.T) {
	e := start(t)
	en, _ := e.create(t, "https://a.example/")
	id := en.Subscription.ID
	desc := "x"
	up, _ := e.reg.Update(ctx(t), id, 0, subscription.Fields{Description: &desc})
	if err := e.reg.Delete(ctx(t), id, en.Revision); !errors.Is(err, registry.ErrStale) {
		t.Fatalf("Delete with a stale revision = %v, want ErrStale", err)
	}
	if _, err := e.reg.Get(ctx(t), id); err != nil {
		t.Fatalf("a stale delete removed it: %v", err)
	}
	if err := e.reg.Delete(ctx(t), id, up.Revision); err != nil {
		t.Fatal(err)
	}
	if _, err := e.reg.Get(ctx(t), id); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("Get after Delete = %v", err)
	}
	if err := e.reg.Delete(ctx(t), id, 0); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("second Delete = %v, want ErrNotFound", err)
	}
	// A purge: no revision with the sealed secret is left.
	hist, err := e.kv(t).History(ctx(t), id)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hist {
		if len(h.Value()) > 0 {
			t.Fatalf("revision %d of a deleted subscription still holds %s", h.Revision(), h.Value())
		}
	}
}

func TestSetStatus(t *testing.T) {
	e := start(t)
	en, _ := e.create(t, "https://a.example/")
	id := en.Subscription.ID
	tests := []struct {
		status  subscription.Status
		reason  subscription.Reason
		changed bool
	}{
		{subscription.StatusEnabled, "", false},
		{subscription.StatusPaused, "", true},
		{subscription.StatusPaused, "", false},
		{subscription.StatusDisabled, subscription.ReasonGone, true},
		{subscription.StatusDisabled, subscription.ReasonFailing, true},
		{subscription.StatusEnabled, "", true},
	}
	for _, tt := range tests {
		got, changed, err := e.reg.SetStatus(ctx(t), id, 0, tt.status, tt.reason)
		if err != nil || changed != tt.changed || got.Subscription.Status != tt.status || got.Subscription.DisabledReason != tt.reason {
			t.Fatalf("SetStatus(%s, %q) = %+v, changed %v, %v", tt.status, tt.reason, got.Subscription, changed, err)
		}
	}
	for _, bad := range []struct {
		status subscription.Status
		reason subscription.Reason
	}{
		{subscription.StatusDisabled, ""}, {subscription.StatusDisabled, "tired"},
		{subscription.StatusEnabled, subscription.ReasonManual}, {"archived", ""},
	} {
		if _, _, err := e.reg.SetStatus(ctx(t), id, 0, bad.status, bad.reason); !errors.Is(err, registry.ErrInvalid) {
			t.Errorf("SetStatus(%q, %q) = %v, want ErrInvalid", bad.status, bad.reason, err)
		}
	}
	if _, _, err := e.reg.SetStatus(ctx(t), "sub_notifier", 0, subscription.StatusPaused, ""); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("SetStatus of a missing subscription = %v", err)
	}
}

func TestRotateWithGrace(t *testing.T) {
	e := start(t)
	en, old := e.create(t, "https://a.example/")
	id := en.Subscription.ID

	rotated, fresh, err := e.reg.Rotate(ctx(t), id, 0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if fresh == old || !strings.HasPrefix(fresh, "whsec_") {
		t.Fatalf("Rotate returned %q…", fresh[:6])
	}
	secrets := rotated.Secrets(e.clock.Now())
	if len(secrets) != 2 || secrets[0].Text != fresh || secrets[0].ExpiresAt != nil ||
		secrets[1].Text != old || secrets[1].ExpiresAt == nil || !secrets[1].ExpiresAt.Equal(e.clock.Now().Add(time.Hour)) {
		t.Fatalf("after rotation: %v", describe(secrets))
	}
	// During the grace period a receiver with either secret verifies.
	signing, _ := e.reg.SigningSecrets(ctx(t), id)
	verifyWith(t, old, signing, true)
	verifyWith(t, fresh, signing, true)

	// After it, only the new one signs, without any write in between.
	e.clock.Advance(time.Hour)
	signing, _ = e.reg.SigningSecrets(ctx(t), id)
	if len(signing) != 1 {
		t.Fatalf("%d secrets sign after the grace period, want 1", len(signing))
	}
	verifyWith(t, fresh, signing, true)
	verifyWith(t, old, signing, false)

	// The next write drops the expired secret from the store.
	desc := "x"
	if _, err := e.reg.Update(ctx(t), id, 0, subscription.Fields{Description: &desc}); err != nil {
		t.Fatal(err)
	}
	kve, _ := e.kv(t).Get(ctx(t), id)
	var stored struct{ Secrets []json.RawMessage }
	_ = json.Unmarshal(kve.Value(), &stored)
	if len(stored.Secrets) != 1 {
		t.Fatalf("%d secrets stored after the grace period and a write, want 1", len(stored.Secrets))
	}
}

func TestRotateWithoutGraceRetiresAtOnce(t *testing.T) {
	e := start(t)
	en, old := e.create(t, "https://a.example/")
	id := en.Subscription.ID
	if _, _, err := e.reg.Rotate(ctx(t), id, 0, time.Hour); err != nil {
		t.Fatal(err)
	}
	_, newest, err := e.reg.Rotate(ctx(t), id, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	signing, _ := e.reg.SigningSecrets(ctx(t), id)
	if len(signing) != 1 {
		t.Fatalf("%d secrets sign after a rotation with grace 0, want 1", len(signing))
	}
	verifyWith(t, newest, signing, true)
	verifyWith(t, old, signing, false)
}

func TestRotateBounds(t *testing.T) {
	e := start(t)
	en, _ := e.create(t, "https://a.example/")
	id := en.Subscription.ID
	for _, g := range []time.Duration{-time.Second, registry.MaxGrace + time.Second} {
		if _, _, err := e.reg.Rotate(ctx(t), id, 0, g); !errors.Is(err, registry.ErrInvalid) {
			t.Errorf("Rotate(grace %s) = %v, want ErrInvalid", g, err)
		}
	}
	for i := 1; i < registry.MaxSecrets; i++ {
		if _, _, err := e.reg.Rotate(ctx(t), id, 0, registry.DefaultGrace); err != nil {
			t.Fatalf("rotation %d: %v", i, err)
		}
	}
	before, _ := e.reg.Get(ctx(t), id)
	if _, _, err := e.reg.Rotate(ctx(t), id, 0, registry.DefaultGrace); !errors.Is(err, registry.ErrTooManySecrets) {
		t.Fatalf("rotation beyond %d secrets = %v, want ErrTooManySecrets", registry.MaxSecrets, err)
	}
	after, _ := e.reg.Get(ctx(t), id)
	if after.Revision != before.Revision {
		t.Fatal("a refused rotation wrote")
	}
	// Once the grace periods are over, rotation works again.
	e.clock.Advance(registry.DefaultGrace)
	if _, _, err := e.reg.Rotate(ctx(t), id, 0, registry.DefaultGrace); err != nil {
		t.Fatalf("rotation after the grace periods: %v", err)
	}
	if _, _, err := e.reg.Rotate(ctx(t), id, before.Revision, registry.DefaultGrace); !errors.Is(err, registry.ErrStale) {
		t.Fatalf("rotation with a stale revision = %v", err)
	}
}

func describe(secrets []registry.Secret) string {
	var b strings.Builder
	for _, s := range secrets {
		b.WriteString(s.String())
		if s.ExpiresAt != nil {
			b.WriteString(" until " + s.ExpiresAt.String())
		}
		b.WriteString("; ")
	}
	return b.String()
}

func TestSecretPrintsRedacted(t *testing.T) {
	e := start(t)
	en, secret := e.create(t, "https://a.example/")
	for _, out := range []string{
		describe(en.Secrets(e.clock.Now())),
		logged(en.Secrets(e.clock.Now())),
	} {
		if strings.Contains(out, strings.TrimPrefix(secret, "whsec_")) {
			t.Fatalf("printing secrets shows one: %s", out)
		}
	}
}

func logged(v any) string {
	var b strings.Builder
	slog.New(slog.NewTextHandler(&b, nil)).Info("x", "secrets", v)
	return b.String()
}
