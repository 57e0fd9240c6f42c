package registry_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jethook/jethook/dispatcher/internal/registry"
	"github.com/jethook/jethook/dispatcher/internal/subscription"
	"github.com/jethook/jethook/shared/natstest"
	"github.com/jethook/jethook/shared/testkit"
)

// recorder collects what a watch reports.
type recorder struct {
	mu      sync.Mutex
	changes []registry.Change
	at      []time.Time
}

func (r *recorder) add(c registry.Change) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.changes = append(r.changes, c)
	r.at = append(r.at, time.Now())
}

// find returns when the first change after index from that matches was
// seen.
func (r *recorder) find(from int, match func(registry.Change) bool) (int, time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := from; i < len(r.changes); i++ {
		if match(r.changes[i]) {
			return i, r.at[i], true
		}
	}
	return 0, time.Time{}, false
}

func (r *recorder) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.changes)
}

// watch runs reg.Watch in the background until the test ends.
func watch(t testing.TB, reg *registry.Registry) *recorder {
	rec := &recorder{}
	c, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- reg.Watch(c, rec.add) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Watch returned %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Watch did not return after its context ended")
		}
	})
	return rec
}

func put(id string, match func(registry.Entry) bool) func(registry.Change) bool {
	return func(c registry.Change) bool { return c.Op == registry.Put && c.ID == id && match(c.Entry) }
}

func synced(c registry.Change) bool { return c.Op == registry.Synced }

// replica is a second dispatcher's registry: its own NATS connection.
func (e *env) replica(t *testing.T) *registry.Registry {
	_, js := natstest.Connect(t, e.srv.URL())
	return newRegistry(t, js, testKey, nil)
}

// waitFor waits for a matching change after index from and returns its
// index and how long after since it was seen.
func waitFor(t *testing.T, rec *recorder, from int, since time.Time, what string, match func(registry.Change) bool) (int, time.Duration) {
	t.Helper()
	var i int
	var at time.Time
	testkit.Eventually(t, 10*time.Second, what, func() bool {
		var ok bool
		i, at, ok = rec.find(from, match)
		return ok
	})
	return i, at.Sub(since)
}

func TestWatchReachesAnotherReplica(t *testing.T) {
	e := start(t)
	a, _ := e.create(t, "https://a.example/")
	b, _ := e.create(t, "https://b.example/")
	rec := watch(t, e.replica(t))

	// First Restarted, the state as it is, then Synced.
	s, _ := waitFor(t, rec, 0, time.Now(), "Synced", synced)
	if i, _, ok := rec.find(0, func(c registry.Change) bool { return c.Op == registry.Restarted }); !ok || i != 0 {
		t.Fatalf("the watch did not begin with Restarted (index %d)", i)
	}
	for _, id := range []string{a.Subscription.ID, b.Subscription.ID} {
		if i, _, ok := rec.find(0, put(id, func(registry.Entry) bool { return true })); !ok || i > s {
			t.Fatalf("initial value of %s not reported before Synced", id)
		}
	}
	if s != 3 {
		t.Fatalf("Synced at index %d, want 3 (after Restarted and the two subscriptions)", s)
	}

	// Each change reaches the other replica, with what it changed, and
	// its secrets ready to sign.
	desc := "patched"
	start := time.Now()
	up, err := e.reg.Update(ctx(t), a.Subscription.ID, 0, subscription.Fields{Description: &desc})
	if err != nil {
		t.Fatal(err)
	}
	i, patchLag := waitFor(t, rec, s, start, "the patch", put(a.Subscription.ID, func(en registry.Entry) bool {
		return en.Revision == up.Revision && en.Subscription.Description == "patched" && len(en.SigningSecrets(time.Now())) == 1
	}))

	start = time.Now()
	if _, _, err := e.reg.SetStatus(ctx(t), b.Subscription.ID, 0, subscription.StatusDisabled, subscription.ReasonGone); err != nil {
		t.Fatal(err)
	}
	i, statusLag := waitFor(t, rec, i+1, start, "the status change", put(b.Subscription.ID, func(en registry.Entry) bool {
		return en.Subscription.Status == subscription.StatusDisabled && en.Subscription.DisabledReason == subscription.ReasonGone
	}))

	start = time.Now()
	if err := e.reg.Delete(ctx(t), a.Subscription.ID, 0); err != nil {
		t.Fatal(err)
	}
	_, deleteLag := waitFor(t, rec, i+1, start, "the delete", func(c registry.Change) bool {
		return c.Op == registry.Deleted && c.ID == a.Subscription.ID
	})

	start = time.Now()
	c, _ := e.create(t, "https://c.example/")
	_, createLag := waitFor(t, rec, i+1, start, "the create", put(c.Subscription.ID, func(registry.Entry) bool { return true }))
	t.Logf("seen by the other replica after: patch %s, status %s, delete %s, create %s", patchLag, statusLag, deleteLag, createLag)
}

func TestWatchSurvivesNATSRestart(t *testing.T) {
	e := start(t)
	rec := watch(t, e.replica(t))
	waitFor(t, rec, 0, time.Now(), "Synced", synced)

	e.srv.Restart(t)
	// The writer's connection comes back by itself; creating retries
	// until it has.
	var created registry.Entry
	testkit.Eventually(t, 20*time.Second, "a create after the restart", func() bool {
		c, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		en, _, err := e.reg.Create(c, fields("https://after.example/"))
		created = en
		return err == nil
	})
	// Without starting over at the reconnect, the watch's consumer takes
	// about 10 s to notice that it lost its place; with it, well under
	// one. Five seconds leaves room for a loaded machine.
	since := time.Now()
	testkit.Eventually(t, 5*time.Second, "the create after the restart", func() bool {
		_, _, ok := rec.find(0, put(created.Subscription.ID, func(registry.Entry) bool { return true }))
		return ok
	})
	t.Logf("a create after the restart reached the watch in %s", time.Since(since))
}

func TestWatchWaitsForProvisioning(t *testing.T) {
	srv := natstest.RunServer(t)
	_, js := natstest.Connect(t, srv.URL())
	r, err := registry.New(js, testKey, 1, discard(), registry.Options{RewatchWait: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	rec := watch(t, r)
	if err := r.Provision(ctx(t)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, rec, 0, time.Now(), "Synced once provisioned", synced)
	en, _, err := r.Create(ctx(t), fields("https://a.example/"))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, rec, 0, time.Now(), "the create", put(en.Subscription.ID, func(registry.Entry) bool { return true }))
}

// BenchmarkWatchLatency measures the time from a change on one replica to
// its report by another replica's watch (one op = one patch seen).
func BenchmarkWatchLatency(b *testing.B) {
	srv := natstest.RunServer(b)
	_, js := natstest.Connect(b, srv.URL())
	writer, err := registry.New(js, testKey, 1, discard(), registry.Options{})
	if err != nil {
		b.Fatal(err)
	}
	c := context.Background()
	if err := writer.Provision(c); err != nil {
		b.Fatal(err)
	}
	_, js2 := natstest.Connect(b, srv.URL())
	reader, err := registry.New(js2, testKey, 1, discard(), registry.Options{})
	if err != nil {
		b.Fatal(err)
	}
	if err := reader.Provision(c); err != nil {
		b.Fatal(err)
	}
	en, _, err := writer.Create(c, fields("https://a.example/"))
	if err != nil {
		b.Fatal(err)
	}
	seen := make(chan uint64, 16)
	wctx, cancel := context.WithCancel(c)
	defer cancel()
	go func() {
		_ = reader.Watch(wctx, func(ch registry.Change) {
			if ch.Op == registry.Put {
				seen <- ch.Entry.Revision
			}
		})
	}()
	<-seen // the initial value
	b.ResetTimer()
	for n := 0; b.Loop(); n++ {
		desc := fmt.Sprint(n)
		up, err := writer.Update(c, en.Subscription.ID, 0, subscription.Fields{Description: &desc})
		if err != nil {
			b.Fatal(err)
		}
		for rev := <-seen; rev != up.Revision; rev = <-seen {
		}
	}
}
