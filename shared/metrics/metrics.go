package metrics

import (
	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/adaptor"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Namespace starts the name of every jethook metric.
const Namespace = "jethook"

// Path is where the metrics are served.
const Path = "/metrics"

// NewRegistry returns a registry of the service's own, with the Go runtime
// and process collectors. Each service builds one instead of using the
// global default registry, so that tests can run several services in one
// process and every metric is registered where it is used.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

// Register adds GET /metrics, serving what g gathers in the Prometheus
// text format. A collector that fails does not hide the others: the scrape
// returns everything that could be gathered.
func Register(app *fiber.App, g prometheus.Gatherer) {
	h := promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
	app.Get(Path, adaptor.HTTPHandler(h))
}
