package config

import (
	"strings"
	"testing"
	"time"
)

func TestLoad(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		wantErr string
	}{
		{"defaults", nil, ""},
		{"bad addr", map[string]string{"ORDERS_ADDR": "nope"}, "ORDERS_ADDR"},
		{"bad publish timeout", map[string]string{"PUBLISH_TIMEOUT": "banana"}, "PUBLISH_TIMEOUT"},
		{"bad idempotency ttl", map[string]string{"IDEMPOTENCY_TTL": "1s"}, "IDEMPOTENCY_TTL"},
		{"bad nats url", map[string]string{"NATS_URL": "localhost"}, "NATS_URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Load(func(k string) string { return tt.env[k] })
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if c.Addr != "127.0.0.1:8080" || c.NATSURL != "nats://127.0.0.1:4222" || c.PublishTimeout != 3*time.Second || c.IdempotencyTTL != 24*time.Hour {
					t.Fatalf("defaults = %+v", c)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Load error = %v, want one naming %s", err, tt.wantErr)
			}
		})
	}
}
