package admin_test

import (
	"encoding/base64"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jethook/jethook/dispatcher/internal/attempt"
	"github.com/jethook/jethook/dispatcher/internal/platformtest"
	"github.com/jethook/jethook/shared/natsx"
	"github.com/jethook/jethook/shared/testkit"
)

// state is the last sequence of every stream the platform's endpoints
// write: a refused request moves none of them.
func (a *api) state() map[string]uint64 {
	a.t.Helper()
	out := map[string]uint64{}
	for _, name := range []string{"KV_" + natsx.BucketSubscriptions, "KV_" + natsx.BucketJobs, natsx.StreamDeadletter,
		natsx.StreamRedeliveries, natsx.StreamAttempts, natsx.StreamOrders} {
		s, err := a.js.Stream(platformtest.Ctx(a.t), name)
		if err != nil {
			a.t.Fatal(err)
		}
		info, err := s.Info(platformtest.Ctx(a.t))
		if err != nil {
			a.t.Fatal(err)
		}
		out[name] = info.State.LastSeq
	}
	return out
}

// TestHostilePlatformRequests: the attempts, dead-letters, replay,
// recover, jobs and ping endpoints refuse bad input with problem+json and
// the right status (and field), and a refused request changes nothing:
// no replay, no job, no ping.
func TestHostilePlatformRequests(t *testing.T) {
	a := startAPI(t)
	s, _ := a.create(validBody)
	sub := "/v1/subscriptions/" + s.ID
	a.env.DeadLetter(t, s.ID, platformtest.Events(t, 2)...)
	attempt.NewLog(a.js, slog.New(slog.DiscardHandler)).Add(attempt.Record{SubscriptionID: s.ID, EventID: "evt_1", Outcome: "delivered"})
	testkit.Eventually(t, 10*time.Second, "the attempt record", func() bool {
		return a.env.Count(t, natsx.StreamAttempts, "attempts.>") == 1
	})
	since := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	r := a.do(request{method: "POST", path: sub + "/recover", body: `{"since":"` + since + `"}`})
	job := "/v1/jobs/" + decode[struct {
		JobID string `json:"job_id"`
	}](t, r, 202).JobID
	testkit.Eventually(t, 20*time.Second, "the job to be done", func() bool {
		return decode[jobJSON](t, a.do(request{method: "GET", path: job}), 200).State == "done"
	})

	unknownSub := "/v1/subscriptions/sub_0193a5b2-7c1e-7d3a-9f00-1b2c3d4e5f60"
	cursor := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	noAuth := func(method, path string) request { return request{method: method, path: path, noAuth: true} }
	get := func(path string) request { return request{method: "GET", path: path} }
	post := func(path, body string) request { return request{method: "POST", path: path, body: body} }
	typed := func(path, contentType, body string) request {
		return request{method: "POST", path: path, body: body, header: map[string]string{"Content-Type": contentType}}
	}
	var many []string
	for i := range 1001 {
		many = append(many, fmt.Sprintf(`"evt_%d"`, i))
	}
	big := `{"event_ids":["` + strings.Repeat("x", 70<<10) + `"]}`
	future := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	old := time.Now().Add(-8 * 24 * time.Hour).UTC().Format(time.RFC3339)

	tests := []hostileCase{
		// Authentication first, on every route.
		{name: "attempts without a token", req: noAuth("GET", sub+"/attempts"), status: 401},
		{name: "event attempts without a token", req: noAuth("GET", "/v1/events/evt_1/attempts"), status: 401},
		{name: "dead letters without a token", req: noAuth("GET", sub+"/dead-letters"), status: 401},
		{name: "replay without a token", req: request{method: "POST", path: sub + "/dead-letters/replay", body: `{}`, noAuth: true}, status: 401},
		{name: "recover without a token", req: request{method: "POST", path: sub + "/recover", body: `{"since":"` + since + `"}`, noAuth: true}, status: 401},
		{name: "job without a token", req: noAuth("GET", job), status: 401},
		{name: "ping without a token", req: noAuth("POST", sub+"/ping"), status: 401},
		{name: "replay with a wrong token", req: request{method: "POST", path: sub + "/dead-letters/replay", body: `{}`,
			header: map[string]string{"Authorization": "Bearer " + strings.ToUpper(token)}}, status: 401},
		{name: "token in the query", req: request{method: "GET", path: sub + "/attempts?access_token=" + token, noAuth: true}, status: 401},

		// Attempts: the query.
		{name: "attempts limit 0", req: get(sub + "/attempts?limit=0"), status: 422, field: "limit"},
		{name: "attempts limit 501", req: get(sub + "/attempts?limit=501"), status: 422, field: "limit"},
		{name: "attempts limit word", req: get(sub + "/attempts?limit=all"), status: 422, field: "limit"},
		{name: "attempts limit twice", req: get(sub + "/attempts?limit=1&limit=2"), status: 422, field: "limit"},
		{name: "attempts cursor garbage", req: get(sub + "/attempts?cursor=%25%25"), status: 422, field: "cursor"},
		{name: "attempts cursor of dead letters", req: get(sub + "/attempts?cursor=" + cursor("dead-letters:5")), status: 422, field: "cursor"},
		{name: "attempts cursor of events", req: get(sub + "/attempts?cursor=" + cursor("event-attempts:5")), status: 422, field: "cursor"},
		{name: "attempts cursor of subscriptions", req: get(sub + "/attempts?cursor=" + cursor(s.ID)), status: 422, field: "cursor"},
		{name: "attempts cursor zero", req: get(sub + "/attempts?cursor=" + cursor("attempts:0")), status: 422, field: "cursor"},
		{name: "attempts cursor signed", req: get(sub + "/attempts?cursor=" + cursor("attempts:+5")), status: 422, field: "cursor"},
		{name: "attempts cursor raw number", req: get(sub + "/attempts?cursor=5"), status: 422, field: "cursor"},
		{name: "attempts outcome unknown", req: get(sub + "/attempts?outcome=success"), status: 422, field: "outcome"},
		{name: "attempts outcome twice", req: get(sub + "/attempts?outcome=retry&outcome=delivered"), status: 422, field: "outcome"},
		{name: "attempts event id with a dot", req: get(sub + "/attempts?event_id=evt.1"), status: 422, field: "event_id"},
		{name: "attempts event id wildcard", req: get(sub + "/attempts?event_id=*"), status: 422, field: "event_id"},
		{name: "attempts event id tail wildcard", req: get(sub + "/attempts?event_id=%3E"), status: 422, field: "event_id"},
		{name: "attempts event id too long", req: get(sub + "/attempts?event_id=" + strings.Repeat("e", 257)), status: 422, field: "event_id"},
		{name: "attempts event id empty", req: get(sub + "/attempts?event_id="), status: 422, field: "event_id"},
		{name: "attempts unknown parameter", req: get(sub + "/attempts?status=500"), status: 422, field: "status"},
		{name: "attempts bad id", req: get("/v1/subscriptions/sub_x/attempts"), status: 404},
		{name: "attempts unknown id", req: get(unknownSub + "/attempts"), status: 404},

		// Event attempts.
		{name: "event attempts wildcard id", req: get("/v1/events/*/attempts"), status: 404},
		{name: "event attempts tail wildcard id", req: get("/v1/events/>/attempts"), status: 404},
		{name: "event attempts dotted id", req: get("/v1/events/evt.1/attempts"), status: 404},
		{name: "event attempts unknown parameter", req: get("/v1/events/evt_1/attempts?event_id=evt_1"), status: 422, field: "event_id"},
		{name: "event attempts cursor of a subscription's", req: get("/v1/events/evt_1/attempts?cursor=" + cursor("attempts:3")), status: 422, field: "cursor"},

		// Dead letters.
		{name: "dead letters bad id", req: get("/v1/subscriptions/nope/dead-letters"), status: 404},
		{name: "dead letters unknown id", req: get(unknownSub + "/dead-letters"), status: 404},
		{name: "dead letters cursor of attempts", req: get(sub + "/dead-letters?cursor=" + cursor("attempts:3")), status: 422, field: "cursor"},
		{name: "dead letters outcome", req: get(sub + "/dead-letters?outcome=retry"), status: 422, field: "outcome"},
		{name: "dead letters limit 0", req: get(sub + "/dead-letters?limit=0"), status: 422, field: "limit"},

		// Replay.
		{name: "replay malformed", req: post(sub+"/dead-letters/replay", `{"event_ids":[`), status: 400},
		{name: "replay duplicate key", req: post(sub+"/dead-letters/replay", `{"event_ids":["a"],"event_ids":["b"]}`), status: 400},
		{name: "replay empty JSON body", req: typed(sub+"/dead-letters/replay", "application/json", ""), status: 400},
		{name: "replay without a body", req: post(sub+"/dead-letters/replay", ""), status: 415},
		{name: "replay text", req: typed(sub+"/dead-letters/replay", "text/plain", `{}`), status: 415},
		{name: "replay gzip", req: request{method: "POST", path: sub + "/dead-letters/replay", body: `{}`,
			header: map[string]string{"Content-Encoding": "gzip"}}, status: 415},
		{name: "replay array", req: post(sub+"/dead-letters/replay", `["evt_1"]`), status: 422, field: "body"},
		{name: "replay unknown field", req: post(sub+"/dead-letters/replay", `{"all":true}`), status: 422, field: "all"},
		{name: "replay ids string", req: post(sub+"/dead-letters/replay", `{"event_ids":"evt_1"}`), status: 422, field: "event_ids"},
		{name: "replay ids empty", req: post(sub+"/dead-letters/replay", `{"event_ids":[]}`), status: 422, field: "event_ids"},
		{name: "replay ids null", req: post(sub+"/dead-letters/replay", `{"event_ids":null}`), status: 422, field: "event_ids"},
		{name: "replay id number", req: post(sub+"/dead-letters/replay", `{"event_ids":[1]}`), status: 422, field: "event_ids"},
		{name: "replay id wildcard", req: post(sub+"/dead-letters/replay", `{"event_ids":["evt_1","*"]}`), status: 422, field: "event_ids"},
		{name: "replay 1001 ids", req: post(sub+"/dead-letters/replay", `{"event_ids":[`+strings.Join(many, ",")+`]}`), status: 422, field: "event_ids"},
		{name: "replay over 64 KiB", req: post(sub+"/dead-letters/replay", big), status: 413},
		{name: "replay bad id", req: post("/v1/subscriptions/sub_/dead-letters/replay", `{}`), status: 404},
		{name: "replay unknown id", req: post(unknownSub+"/dead-letters/replay", `{}`), status: 404},

		// Recover.
		{name: "recover without since", req: post(sub+"/recover", `{"until":"`+since+`"}`), status: 422, field: "since"},
		{name: "recover since null", req: post(sub+"/recover", `{"since":null}`), status: 422, field: "since"},
		{name: "recover since number", req: post(sub+"/recover", `{"since":1764324000}`), status: 422, field: "since"},
		{name: "recover since a date", req: post(sub+"/recover", `{"since":"2026-11-28"}`), status: 422, field: "since"},
		{name: "recover since without zone", req: post(sub+"/recover", `{"since":"2026-11-28T10:00:00"}`), status: 422, field: "since"},
		{name: "recover since words", req: post(sub+"/recover", `{"since":"yesterday"}`), status: 422, field: "since"},
		{name: "recover since in the future", req: post(sub+"/recover", `{"since":"`+future+`"}`), status: 422, field: "since"},
		{name: "recover until before since", req: post(sub+"/recover", `{"since":"`+since+`","until":"`+old+`"}`), status: 422, field: "since"},
		{name: "recover until in the future", req: post(sub+"/recover", `{"since":"`+since+`","until":"`+future+`"}`), status: 422, field: "until"},
		{name: "recover until object", req: post(sub+"/recover", `{"since":"`+since+`","until":{}}`), status: 422, field: "until"},
		{name: "recover older than ORDERS keeps", req: post(sub+"/recover", `{"since":"`+old+`"}`), status: 422, field: "since"},
		{name: "recover unknown field", req: post(sub+"/recover", `{"since":"`+since+`","limit":10}`), status: 422, field: "limit"},
		{name: "recover malformed", req: post(sub+"/recover", `{"since":`), status: 400},
		{name: "recover empty JSON body", req: typed(sub+"/recover", "application/json", ""), status: 400},
		{name: "recover over 64 KiB", req: post(sub+"/recover", big), status: 413},
		{name: "recover bad id", req: post("/v1/subscriptions/x/recover", `{"since":"`+since+`"}`), status: 404},
		{name: "recover unknown id", req: post(unknownSub+"/recover", `{"since":"`+since+`"}`), status: 404},

		// Jobs.
		{name: "job bad id", req: get("/v1/jobs/nope"), status: 404},
		{name: "job unknown id", req: get("/v1/jobs/job_0193a5b2-7c1e-7d3a-9f00-1b2c3d4e5f60"), status: 404},
		{name: "job upper-case id", req: get(strings.ToUpper(job)), status: 404},
		{name: "job id of a subscription", req: get("/v1/jobs/" + s.ID), status: 404},
		{name: "job traversal", req: get("/v1/jobs/..%2Fsubscriptions"), status: 404},
		{name: "job counter key", req: get(job + ".delivered"), status: 404},

		// Ping.
		{name: "ping body field", req: post(sub+"/ping", `{"url":"http://127.0.0.1:1/"}`), status: 422, field: "url"},
		{name: "ping malformed", req: post(sub+"/ping", `{`), status: 400},
		{name: "ping text", req: typed(sub+"/ping", "text/plain", "ping"), status: 415},
		{name: "ping bad id", req: post("/v1/subscriptions/sub_notifier2/ping", ""), status: 404},
		{name: "ping unknown id", req: post(unknownSub+"/ping", ""), status: 404},

		// Methods the routes do not have.
		{name: "GET replay", req: get(sub + "/dead-letters/replay"), status: 405},
		{name: "GET recover", req: get(sub + "/recover"), status: 405},
		{name: "GET ping", req: get(sub + "/ping"), status: 405},
		{name: "DELETE a job", req: request{method: "DELETE", path: job}, status: 405},
		{name: "DELETE dead letters", req: request{method: "DELETE", path: sub + "/dead-letters"}, status: 405},
		{name: "POST attempts", req: post(sub+"/attempts", `{}`), status: 405},
	}
	a.refuses(t, tests, func() string { return fmt.Sprint(a.state()) })
	// The dead letters are all still there.
	if n := a.env.Count(t, natsx.StreamDeadletter, natsx.DeadletterFilter(s.ID)); n != 2 {
		t.Fatalf("%d dead letters after the hostile requests, want 2", n)
	}
	t.Logf("%d hostile cases", len(tests))
}
