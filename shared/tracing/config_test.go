package tracing

import (
	"strings"
	"testing"
	"time"
)

func env(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }

func TestLoad(t *testing.T) {
	tests := []struct {
		name         string
		env          map[string]string
		wantOn       bool
		wantEndpoint string
		wantProtocol string
		wantService  string
		wantSampler  string
	}{
		{name: "nothing set: off", env: nil, wantService: "jethook-orders", wantSampler: "ParentBased{root:AlwaysOnSampler"},
		{
			name:   "base endpoint: OTLP/HTTP to its traces path",
			env:    map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"},
			wantOn: true, wantEndpoint: "http://127.0.0.1:4318/v1/traces", wantProtocol: ProtocolHTTP,
		},
		{
			name:   "base endpoint with a path and a slash",
			env:    map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "https://otel.example.com/collect/"},
			wantOn: true, wantEndpoint: "https://otel.example.com/collect/v1/traces", wantProtocol: ProtocolHTTP,
		},
		{
			name: "the traces endpoint is taken as it is, and wins",
			env: map[string]string{
				"OTEL_EXPORTER_OTLP_ENDPOINT":        "http://127.0.0.1:4318",
				"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:9999/traces",
			},
			wantOn: true, wantEndpoint: "http://127.0.0.1:9999/traces", wantProtocol: ProtocolHTTP,
		},
		{
			name:   "gRPC keeps the endpoint",
			env:    map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
			wantOn: true, wantEndpoint: "http://jaeger:4317", wantProtocol: ProtocolGRPC,
		},
		{
			name: "the traces protocol wins",
			env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4317",
				"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"},
			wantOn: true, wantEndpoint: "http://jaeger:4317", wantProtocol: ProtocolGRPC,
		},
		{
			name: "OTEL_SDK_DISABLED turns it off",
			env:  map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_SDK_DISABLED": "TRUE"},
		},
		{
			name: "OTEL_TRACES_EXPORTER=none turns it off",
			env:  map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_TRACES_EXPORTER": "none"},
		},
		{
			name:        "OTEL_SERVICE_NAME names the service",
			env:         map[string]string{"OTEL_SERVICE_NAME": "shop-orders", "OTEL_RESOURCE_ATTRIBUTES": "service.name=other"},
			wantService: "shop-orders",
		},
		{
			name:        "service.name of OTEL_RESOURCE_ATTRIBUTES names it otherwise",
			env:         map[string]string{"OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=prod,service.name=shop%20orders"},
			wantService: "shop orders",
		},
		{
			name:        "a ratio sampler",
			env:         map[string]string{"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"},
			wantSampler: "ParentBased{root:TraceIDRatioBased{0.25}",
		},
		{
			name:        "never",
			env:         map[string]string{"OTEL_TRACES_SAMPLER": "always_off"},
			wantSampler: "AlwaysOffSampler",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Load(env(tt.env), "orders")
			if err != nil {
				t.Fatal(err)
			}
			if c.On() != tt.wantOn || c.Endpoint != tt.wantEndpoint {
				t.Fatalf("On() = %v, Endpoint = %q; want %v, %q", c.On(), c.Endpoint, tt.wantOn, tt.wantEndpoint)
			}
			if tt.wantProtocol != "" && c.Protocol != tt.wantProtocol {
				t.Errorf("Protocol = %q, want %q", c.Protocol, tt.wantProtocol)
			}
			if tt.wantService != "" && serviceName(c) != tt.wantService {
				t.Errorf("service.name = %q, want %q", serviceName(c), tt.wantService)
			}
			if tt.wantSampler != "" && !strings.HasPrefix(c.Sampler.Description(), tt.wantSampler) {
				t.Errorf("sampler = %s, want %s…", c.Sampler.Description(), tt.wantSampler)
			}
		})
	}
}

func TestLoadResourceAndBatch(t *testing.T) {
	c, err := Load(env(map[string]string{
		"OTEL_RESOURCE_ATTRIBUTES": " deployment.environment.name = staging , team=pay%2Cments",
		"OTEL_BSP_SCHEDULE_DELAY":  "200",
		"OTEL_BSP_MAX_QUEUE_SIZE":  "4096",
	}), "notifier")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, a := range c.Resource {
		got[string(a.Key)] = a.Value.AsString()
	}
	want := map[string]string{"deployment.environment.name": "staging", "team": "pay,ments", "service.name": "jethook-notifier"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("resource %s = %q, want %q (all: %v)", k, got[k], v, got)
		}
	}
	if c.ScheduleDelay != 200*time.Millisecond || c.MaxQueueSize != 4096 || c.ExportTimeout != 0 || c.MaxExportBatchSize != 0 {
		t.Errorf("batch settings = %s %d %s %d", c.ScheduleDelay, c.MaxQueueSize, c.ExportTimeout, c.MaxExportBatchSize)
	}
}

// TestLoadRefusesBadValues: each bad variable is one line that names it,
// and a URL's password is never shown.
func TestLoadRefusesBadValues(t *testing.T) {
	_, err := Load(env(map[string]string{
		"OTEL_SDK_DISABLED":           "yes",
		"OTEL_TRACES_EXPORTER":        "zipkin",
		"OTEL_EXPORTER_OTLP_ENDPOINT": "ftp://user:hunter2@collector:21",
		"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
		"OTEL_RESOURCE_ATTRIBUTES":    "novalue",
		"OTEL_TRACES_SAMPLER":         "jaeger_remote",
		"OTEL_BSP_SCHEDULE_DELAY":     "5s",
	}), "orders")
	if err == nil {
		t.Fatal("Load accepted bad values")
	}
	lines := strings.Split(err.Error(), "\n")
	for _, name := range []string{"OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT",
		"OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_TRACES_SAMPLER", "OTEL_BSP_SCHEDULE_DELAY"} {
		n := 0
		for _, l := range lines {
			if strings.Contains(l, name+"=") || strings.Contains(l, name+" ") {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%d lines name %s:\n%s", n, name, err)
		}
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Errorf("the error shows the endpoint's password:\n%s", err)
	}
	if _, err := Load(env(map[string]string{"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"}), "orders"); err == nil ||
		!strings.Contains(err.Error(), "OTEL_TRACES_SAMPLER_ARG") {
		t.Errorf("a ratio of 2: %v", err)
	}
}
