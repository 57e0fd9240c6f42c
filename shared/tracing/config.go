package tracing

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/jethook/jethook/shared/config"
)

// The OTLP protocols of OTEL_EXPORTER_OTLP_PROTOCOL that the Go exporters
// speak.
const (
	ProtocolHTTP = "http/protobuf"
	ProtocolGRPC = "grpc"
)

// tracesPath is what an OTLP/HTTP exporter appends to the base URL of
// OTEL_EXPORTER_OTLP_ENDPOINT.
const tracesPath = "/v1/traces"

// Config says whether spans are exported, where to and how. Load fills it
// from the OTEL_* variables.
type Config struct {
	// Endpoint is the URL spans are sent to: for OTLP/HTTP the full URL
	// of the traces path, for gRPC the collector's scheme, host and port.
	// Empty means tracing is off.
	Endpoint string
	// Protocol is ProtocolHTTP or ProtocolGRPC.
	Protocol string
	// Resource describes the process: OTEL_RESOURCE_ATTRIBUTES, with
	// service.name from OTEL_SERVICE_NAME or the service's own name.
	Resource []attribute.KeyValue
	// Sampler decides which traces are recorded (OTEL_TRACES_SAMPLER and
	// OTEL_TRACES_SAMPLER_ARG); SamplerName is its name for the log.
	Sampler     sdktrace.Sampler
	SamplerName string
	// The batch span processor's settings (OTEL_BSP_*); zero keeps the
	// SDK's default.
	ScheduleDelay, ExportTimeout     time.Duration
	MaxQueueSize, MaxExportBatchSize int
}

// On reports whether spans are recorded and exported.
func (c Config) On() bool { return c.Endpoint != "" }

// Load reads the OTEL_* variables that decide whether and where spans go,
// through getenv, and reports each bad one on a line of its own. service
// names the process when OTEL_SERVICE_NAME does not: "orders" becomes
// service.name "jethook-orders". The exporter itself reads its connection
// details (OTEL_EXPORTER_OTLP_HEADERS, _TIMEOUT, _COMPRESSION,
// _CERTIFICATE, _CLIENT_CERTIFICATE and _CLIENT_KEY, and their _TRACES_
// forms) from the environment, as the SDK documents them.
func Load(getenv func(string) string, service string) (Config, error) {
	e := config.New(getenv)
	var errs []error
	c := Config{Protocol: ProtocolHTTP}

	disabled := strings.ToLower(e.String("OTEL_SDK_DISABLED", "false"))
	if disabled != "true" && disabled != "false" {
		errs = append(errs, fmt.Errorf("invalid OTEL_SDK_DISABLED=%q: want true or false", getenv("OTEL_SDK_DISABLED")))
	}
	exporter := e.OneOf("OTEL_TRACES_EXPORTER", "otlp", "otlp", "none")
	c.Protocol = e.OneOf("OTEL_EXPORTER_OTLP_PROTOCOL", ProtocolHTTP, ProtocolHTTP, ProtocolGRPC)
	c.Protocol = e.OneOf("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", c.Protocol, ProtocolHTTP, ProtocolGRPC)
	endpoint, err := endpointURL(getenv, c.Protocol)
	if err != nil {
		errs = append(errs, err)
	}
	res, err := resourceAttributes(getenv("OTEL_RESOURCE_ATTRIBUTES"))
	if err != nil {
		errs = append(errs, err)
	}
	name := e.String("OTEL_SERVICE_NAME", "")
	switch {
	case name != "":
		res = withService(res, name)
	case !hasKey(res, serviceNameKey):
		res = withService(res, "jethook-"+service)
	}
	c.Resource = res
	c.Sampler, c.SamplerName, err = sampler(getenv)
	if err != nil {
		errs = append(errs, err)
	}
	// The specification counts both in milliseconds.
	c.ScheduleDelay = time.Duration(e.Int("OTEL_BSP_SCHEDULE_DELAY", 0, 1, 600_000)) * time.Millisecond
	c.ExportTimeout = time.Duration(e.Int("OTEL_BSP_EXPORT_TIMEOUT", 0, 1, 600_000)) * time.Millisecond
	c.MaxQueueSize = e.Int("OTEL_BSP_MAX_QUEUE_SIZE", 0, 1, 1_000_000)
	c.MaxExportBatchSize = e.Int("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 0, 1, 1_000_000)

	if err := errors.Join(e.Err(), errors.Join(errs...)); err != nil {
		return Config{}, err
	}
	if disabled == "false" && exporter == "otlp" {
		c.Endpoint = endpoint
	}
	return c, nil
}

// endpointURL returns where spans go: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT as
// it is, or else the base URL OTEL_EXPORTER_OTLP_ENDPOINT, to which
// OTLP/HTTP appends /v1/traces; "" when neither is set.
func endpointURL(getenv func(string) string, protocol string) (string, error) {
	name, raw := "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
	perSignal := raw != ""
	if !perSignal {
		name, raw = "OTEL_EXPORTER_OTLP_ENDPOINT", strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_ENDPOINT"))
	}
	if raw == "" {
		return "", nil
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return "", fmt.Errorf("invalid %s=%q: want an http or https URL, such as http://127.0.0.1:4318", name, config.RedactURL(raw))
	}
	if protocol == ProtocolHTTP && !perSignal {
		u.Path = strings.TrimSuffix(u.Path, "/") + tracesPath
	}
	return u.String(), nil
}

const serviceNameKey = attribute.Key("service.name")

// resourceAttributes parses OTEL_RESOURCE_ATTRIBUTES: key=value pairs
// separated by commas, each value percent-encoded.
func resourceAttributes(raw string) ([]attribute.KeyValue, error) {
	var attrs []attribute.KeyValue
	if strings.TrimSpace(raw) == "" {
		return nil, nil
	}
	for pair := range strings.SplitSeq(raw, ",") {
		k, v, ok := strings.Cut(pair, "=")
		k = strings.TrimSpace(k)
		value, err := url.PathUnescape(strings.TrimSpace(v))
		if !ok || k == "" || err != nil {
			return nil, fmt.Errorf("invalid OTEL_RESOURCE_ATTRIBUTES entry %q: want key=value pairs separated by commas, values percent-encoded", strings.TrimSpace(pair))
		}
		attrs = append(attrs, attribute.String(k, value))
	}
	return attrs, nil
}

func hasKey(attrs []attribute.KeyValue, k attribute.Key) bool {
	for _, a := range attrs {
		if a.Key == k {
			return true
		}
	}
	return false
}

// withService sets service.name, replacing one that attrs has.
func withService(attrs []attribute.KeyValue, name string) []attribute.KeyValue {
	out := make([]attribute.KeyValue, 0, len(attrs)+1)
	for _, a := range attrs {
		if a.Key != serviceNameKey {
			out = append(out, a)
		}
	}
	return append(out, serviceNameKey.String(name))
}

// sampler reads OTEL_TRACES_SAMPLER and its argument. The default follows
// the caller's decision (a client's traceparent) and samples every trace
// that starts here.
func sampler(getenv func(string) string) (sdktrace.Sampler, string, error) {
	name := strings.TrimSpace(getenv("OTEL_TRACES_SAMPLER"))
	if name == "" {
		name = "parentbased_always_on"
	}
	ratio := 1.0
	if raw := strings.TrimSpace(getenv("OTEL_TRACES_SAMPLER_ARG")); raw != "" && strings.HasSuffix(name, "traceidratio") {
		r, err := strconv.ParseFloat(raw, 64)
		if err != nil || r < 0 || r > 1 {
			return nil, "", fmt.Errorf("invalid OTEL_TRACES_SAMPLER_ARG=%q: want a ratio between 0 and 1, such as 0.25", raw)
		}
		ratio = r
	}
	switch name {
	case "always_on":
		return sdktrace.AlwaysSample(), name, nil
	case "always_off":
		return sdktrace.NeverSample(), name, nil
	case "traceidratio":
		return sdktrace.TraceIDRatioBased(ratio), name, nil
	case "parentbased_always_on":
		return sdktrace.ParentBased(sdktrace.AlwaysSample()), name, nil
	case "parentbased_always_off":
		return sdktrace.ParentBased(sdktrace.NeverSample()), name, nil
	case "parentbased_traceidratio":
		return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio)), name, nil
	}
	return nil, "", fmt.Errorf("invalid OTEL_TRACES_SAMPLER=%q: want one of always_on, always_off, traceidratio, "+
		"parentbased_always_on, parentbased_always_off, parentbased_traceidratio", name)
}
