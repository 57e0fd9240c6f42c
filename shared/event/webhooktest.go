package event

import (
	"encoding/json"
	"time"
)

// TypeWebhookTest is the type of the event the dispatcher's ping sends
// (POST /v1/subscriptions/{id}/ping): a signed webhook that carries no
// business data, so that a receiver can check its endpoint and its
// signature verification end to end. A receiver should answer it 2xx and
// do nothing else.
const TypeWebhookTest = "webhook.test"

// WebhookTest is the whole ping event, in the Standard Webhooks payload
// shape like every event.
type WebhookTest struct {
	ID        string          `json:"id"`
	Type      string          `json:"type"`
	Timestamp time.Time       `json:"timestamp"`
	Data      WebhookTestData `json:"data"`
}

// WebhookTestData names the subscription being tested.
type WebhookTestData struct {
	SubscriptionID string `json:"subscription_id"`
}

// NewWebhookTest returns a ping of subscription subID at now, with a
// fresh event id.
func NewWebhookTest(subID string, now time.Time) (WebhookTest, error) {
	id, err := NewID()
	if err != nil {
		return WebhookTest{}, err
	}
	return WebhookTest{ID: id, Type: TypeWebhookTest, Timestamp: now.UTC().Truncate(time.Second),
		Data: WebhookTestData{SubscriptionID: subID}}, nil
}

// Marshal returns the canonical JSON body of the ping.
func (e WebhookTest) Marshal() ([]byte, error) { return json.Marshal(e) }
