// Package api serves the orders HTTP API: POST /orders and GET /orders/{id}.
package api
