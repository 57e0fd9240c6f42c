package event

import (
	"bytes"
	"os"
	"testing"
	"time"
)

// TestWebhookTestGolden pins the ping's wire format: the example in
// testdata decodes and marshals back byte for byte.
func TestWebhookTestGolden(t *testing.T) {
	b, err := os.ReadFile("testdata/webhook_test_event.json")
	if err != nil {
		t.Fatal(err)
	}
	body := bytes.TrimSpace(b)
	var e WebhookTest
	if err := DecodeJSON(body, &e); err != nil {
		t.Fatal(err)
	}
	want := WebhookTest{ID: "evt_0193a5b2-7c1e-7d3a-9f00-1b2c3d4e5f61", Type: TypeWebhookTest,
		Timestamp: time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC),
		Data:      WebhookTestData{SubscriptionID: "sub_0193a5b2-7c1e-7d3a-9f00-1b2c3d4e5f60"}}
	if e != want {
		t.Fatalf("decoded %+v, want %+v", e, want)
	}
	out, err := e.Marshal()
	if err != nil || !bytes.Equal(out, body) {
		t.Fatalf("Marshal = %s (%v)\nwant     %s", out, err, body)
	}
}

func TestNewWebhookTest(t *testing.T) {
	now := time.Date(2026, 11, 28, 10, 0, 0, 999, time.FixedZone("CET", 3600))
	e, err := NewWebhookTest("sub_notifier", now)
	if err != nil {
		t.Fatal(err)
	}
	if !ValidEventID(e.ID) || e.Type != "webhook.test" || !e.Timestamp.Equal(now.Truncate(time.Second)) ||
		e.Timestamp.Location() != time.UTC || e.Data.SubscriptionID != "sub_notifier" {
		t.Fatalf("NewWebhookTest = %+v", e)
	}
	// An order.paid decoder refuses it: a ping is never mistaken for an
	// order.
	body, _ := e.Marshal()
	if _, err := Decode(body); err == nil {
		t.Fatal("Decode accepted a webhook.test as an order.paid")
	}
}
