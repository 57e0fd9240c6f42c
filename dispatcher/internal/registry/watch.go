package registry

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Op is the kind of a Change.
type Op int

// The kinds of change Watch reports.
const (
	// Put: the subscription was created or changed; Entry holds it.
	Put Op = iota + 1
	// Deleted: the subscription is gone.
	Deleted
	// Synced: every subscription that exists has been reported since the
	// watch (re)started; what has not been reported since then is gone.
	Synced
	// Restarted: the watch (re)starts; the current state follows, then
	// Synced. What a consumer was told before this may be out of date.
	Restarted
)

func (o Op) String() string {
	switch o {
	case Put:
		return "put"
	case Deleted:
		return "deleted"
	case Synced:
		return "synced"
	case Restarted:
		return "restarted"
	}
	return "unknown"
}

// Change is one event of Watch.
type Change struct {
	Op Op
	// ID names the subscription; empty for Synced.
	ID string
	// Entry is the subscription as it now is, for Put.
	Entry Entry
}

// Watch calls fn with Restarted, every subscription, then Synced, then every change
// as it happens, in order, until ctx ends; it returns nil then. fn runs on
// Watch's goroutine and should return quickly: the next change waits for
// it. A change reaches every replica's watch within milliseconds of the
// write.
//
// When the watch breaks (NATS away too long, the bucket recreated) it
// starts over: Restarted, the current state again, then Synced. A consumer
// treats Put as an upsert and, at each Synced, forgets what it was not told
// about since the last Restarted. A value that cannot be read (a
// bad record, a secret that does not decrypt under SECRETS_KEY) is logged
// and skipped.
func (r *Registry) Watch(ctx context.Context, fn func(Change)) error {
	for {
		err := r.watchOnce(ctx, fn)
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, errReconnected):
			r.log.Info("subscription watch restarted after a NATS reconnect")
			continue
		case err != nil && r.Ready():
			// Until the bucket is provisioned there is nothing to report
			// and nothing worth a warning.
			r.log.Warn("subscription watch stopped, restarting", "error", err, "retry_in", r.opts.RewatchWait.String())
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(r.opts.RewatchWait):
		}
	}
}

// watchOnce runs one KV watch until it ends or ctx does.
func (r *Registry) watchOnce(ctx context.Context, fn func(Change)) error {
	kv, err := r.bucket()
	if err != nil {
		return err
	}
	// After a reconnect the watch's consumer may take several seconds to
	// notice that it lost its place (missed heartbeats); starting over at
	// once keeps changes flowing within a second of NATS being back.
	nc := r.js.Conn()
	reconnected := nc.StatusChanged(nats.CONNECTED)
	defer nc.RemoveStatusListener(reconnected)
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return unavailable("watch", err)
	}
	defer func() { _ = w.Stop() }()
	fn(Change{Op: Restarted})
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-reconnected:
			return errReconnected
		case kve, ok := <-w.Updates():
			if !ok {
				return unavailable("watch", errWatchClosed)
			}
			if c, ok := r.change1(kve); ok {
				fn(c)
			}
		}
	}
}

// change1 turns a KV watch entry into a Change; false when it is skipped.
func (r *Registry) change1(kve jetstream.KeyValueEntry) (Change, bool) {
	if kve == nil {
		return Change{Op: Synced}, true
	}
	id := kve.Key()
	switch kve.Operation() {
	case jetstream.KeyValueDelete, jetstream.KeyValuePurge:
		return Change{Op: Deleted, ID: id}, true
	}
	rec, err := decodeRecord(id, kve.Value())
	if err == nil {
		var e Entry
		if e, err = r.entry(rec, kve.Revision()); err == nil {
			return Change{Op: Put, ID: id, Entry: e}, true
		}
	}
	r.log.Error("subscription skipped: unreadable", "subscription_id", id, "revision", kve.Revision(), "error", err)
	return Change{}, false
}

var (
	// errWatchClosed: the server side of the watch went away.
	errWatchClosed = errors.New("the KV watch was closed")
	// errReconnected: the connection came back; the watch starts over.
	errReconnected = errors.New("reconnected to NATS")
)
