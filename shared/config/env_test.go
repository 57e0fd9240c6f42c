package config

import (
	"strings"
	"testing"
	"time"
)

func TestNATSURLList(t *testing.T) {
	const list = "nats://nats-1:4222, nats://nats-2:4222,tls://nats-3:4222"
	e := New(func(k string) string {
		if k == "NATS_URL" {
			return list
		}
		return ""
	})
	if c := e.LoadCommon(); c.NATSURL != list || e.Err() != nil {
		t.Fatalf("NATS_URL list = %q, %v", c.NATSURL, e.Err())
	}
}

func TestGOGCSet(t *testing.T) {
	for _, tt := range []struct {
		name, gogc string
		want       bool
	}{
		{"unset: the service tunes the collector", "", false},
		{"a percentage is the operator's", "200", true},
		{"off is the operator's too", "off", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := New(func(k string) string {
				if k == "GOGC" {
					return tt.gogc
				}
				return ""
			})
			if c := e.LoadCommon(); c.GOGCSet != tt.want || e.Err() != nil {
				t.Fatalf("GOGC=%q: GOGCSet = %v (%v), want %v", tt.gogc, c.GOGCSet, e.Err(), tt.want)
			}
		})
	}
}

func TestEnv(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		wantErr string
	}{
		{"defaults", map[string]string{}, ""},
		{"bad duration", map[string]string{"D": "banana"}, `invalid D="banana"`},
		{"duration out of range", map[string]string{"D": "0s"}, `invalid D="0s"`},
		{"bad int", map[string]string{"STREAM_REPLICAS": "two"}, `invalid STREAM_REPLICAS="two"`},
		{"bad url", map[string]string{"NATS_URL": "http://x:4222"}, `invalid NATS_URL`},
		{"bad url in a list", map[string]string{"NATS_URL": "nats://a:4222,http://b:4222"}, `invalid NATS_URL`},
		{"empty entry in a list", map[string]string{"NATS_URL": "nats://a:4222,,nats://c:4222"}, `invalid NATS_URL`},
		{"bare host", map[string]string{"NATS_URL": "localhost"}, `invalid NATS_URL`},
		{"bad log format", map[string]string{"LOG_FORMAT": "xml"}, `invalid LOG_FORMAT="xml"`},
		{"bad addr", map[string]string{"A": "8080"}, `invalid A="8080"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := New(func(k string) string { return tt.env[k] })
			d := e.Duration("D", time.Second, time.Millisecond, time.Hour)
			c := e.LoadCommon()
			a := e.Addr("A", "127.0.0.1:8080")
			err := e.Err()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Err = %v", err)
				}
				if d != time.Second || c.NATSURL != "nats://127.0.0.1:4222" || c.StreamReplicas != 1 || c.LogFormat != "json" || a != "127.0.0.1:8080" {
					t.Fatalf("defaults wrong: %v %+v %v", d, c, a)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Err = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}
