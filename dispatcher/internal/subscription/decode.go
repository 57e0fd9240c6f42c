package subscription

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/jethook/jethook/shared/event"
)

// Fields are the writable fields of a subscription, as a create or patch
// body gives them; nil means not given.
type Fields struct {
	URL           *string
	EventTypes    *[]string
	Description   *string
	RateLimitPerS *int
	MaxInFlight   *int
	Metadata      *map[string]string
}

// Empty reports whether f sets nothing.
func (f Fields) Empty() bool {
	return f.URL == nil && f.EventTypes == nil && f.Description == nil &&
		f.RateLimitPerS == nil && f.MaxInFlight == nil && f.Metadata == nil
}

// URLChecker decides whether a URL may be a webhook target; its error's
// message becomes the field error of "url".
type URLChecker interface {
	CheckURL(raw string) error
}

// serverFields are set by the server; a body that names one is told so.
var serverFields = map[string]string{
	"id":              "is set by the server",
	"status":          "is set by the server; use POST …/enable or …/disable",
	"disabled_reason": "is set by the server",
	"created_at":      "is set by the server",
	"updated_at":      "is set by the server",
	"secret":          "is set by the server; use POST …/secret/rotate",
}

// DecodeCreate decodes a POST /v1/subscriptions body: url and event_types
// are required, the other fields optional (null or absent: the default).
// It returns an *event.SyntaxError for a body that is not one well-formed
// JSON value (malformed, trailing data, a key twice in an object, not
// UTF-8) and an *event.ValidationError naming every failing field
// otherwise (unknown fields, wrong types, bad values).
func DecodeCreate(body []byte, urls URLChecker) (Fields, error) {
	return decode(body, urls, true)
}

// DecodePatch decodes a PATCH body: any of the writable fields, each
// replacing the current value as a whole (metadata too). null sets an
// optional field back to its default; url and event_types cannot be null.
// Errors are as for DecodeCreate.
func DecodePatch(body []byte, urls URLChecker) (Fields, error) {
	return decode(body, urls, false)
}

func decode(body []byte, urls URLChecker, create bool) (Fields, error) {
	raw, err := DecodeObject(body)
	if err != nil {
		return Fields{}, err
	}
	errs := map[string]string{}
	for k := range raw {
		switch k {
		case "url", "event_types", "description", "rate_limit_per_s", "max_in_flight", "metadata":
		default:
			if msg, ok := serverFields[k]; ok {
				errs[k] = msg
			} else {
				errs[fieldName(k)] = "is not a known field"
			}
		}
	}
	var f Fields
	if v, ok := present(raw, "url"); ok {
		f.URL = decodeURL(v, urls, errs)
	} else if create || isNull(raw, "url") {
		errs["url"] = required(create)
	}
	if v, ok := present(raw, "event_types"); ok {
		f.EventTypes = decodeEventTypes(v, errs)
	} else if create || isNull(raw, "event_types") {
		errs["event_types"] = required(create)
	}
	if v, ok := present(raw, "description"); ok {
		f.Description = decodeDescription(v, errs)
	} else if isNull(raw, "description") {
		f.Description = ptr("")
	}
	f.RateLimitPerS = decodeInt(raw, "rate_limit_per_s", DefaultRateLimitPerS, MaxRateLimitPerS, errs)
	f.MaxInFlight = decodeInt(raw, "max_in_flight", DefaultMaxInFlight, MaxMaxInFlight, errs)
	if v, ok := present(raw, "metadata"); ok {
		f.Metadata = decodeMetadata(v, errs)
	} else if isNull(raw, "metadata") {
		f.Metadata = &map[string]string{}
	}
	if len(errs) > 0 {
		return Fields{}, &event.ValidationError{Fields: errs}
	}
	return f, nil
}

// DecodeObject decodes a body that must be one JSON object into its
// members, strictly: malformed JSON, trailing data, a key twice in an
// object and invalid UTF-8 are an *event.SyntaxError; well-formed JSON
// that is not an object is an *event.ValidationError on "body".
func DecodeObject(body []byte) (map[string]json.RawMessage, error) {
	var whole json.RawMessage
	if err := event.DecodeJSON(body, &whole); err != nil {
		return nil, err
	}
	if trimmed := bytes.TrimSpace(whole); len(trimmed) == 0 || trimmed[0] != '{' {
		return nil, &event.ValidationError{Fields: map[string]string{"body": "must be a JSON object"}}
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(whole, &raw); err != nil {
		return nil, &event.SyntaxError{Reason: err.Error()}
	}
	return raw, nil
}

// DecodeObjectWith is DecodeObject for a body that may hold only the
// members known; any other is an *event.ValidationError naming it.
func DecodeObjectWith(body []byte, known ...string) (map[string]json.RawMessage, error) {
	raw, err := DecodeObject(body)
	if err != nil {
		return nil, err
	}
	errs := map[string]string{}
	for k := range raw {
		if !slices.Contains(known, k) {
			errs[fieldName(k)] = "is not a known field"
		}
	}
	if len(errs) > 0 {
		return nil, &event.ValidationError{Fields: errs}
	}
	return raw, nil
}

// present returns the member name when it is there and not null.
func present(raw map[string]json.RawMessage, name string) (json.RawMessage, bool) {
	v, ok := raw[name]
	if !ok || isNullValue(v) {
		return nil, false
	}
	return v, true
}

func isNull(raw map[string]json.RawMessage, name string) bool {
	v, ok := raw[name]
	return ok && isNullValue(v)
}

func isNullValue(v json.RawMessage) bool { return string(bytes.TrimSpace(v)) == "null" }

func required(create bool) string {
	if create {
		return "is required"
	}
	return "cannot be null; leave it out to keep it"
}

func ptr[T any](v T) *T { return &v }

// fieldName keeps an unknown member's name usable as an error key: short,
// printable. Hostile names are not echoed in full.
func fieldName(k string) string {
	if len(k) > 64 || strings.ContainsFunc(k, func(r rune) bool { return !unicode.IsPrint(r) }) {
		return "(an unknown field)"
	}
	return k
}

func decodeString(v json.RawMessage, name string, errs map[string]string) (string, bool) {
	var s string
	if v[0] != '"' || json.Unmarshal(v, &s) != nil {
		errs[name] = "must be a string"
		return "", false
	}
	return s, true
}

func decodeURL(v json.RawMessage, urls URLChecker, errs map[string]string) *string {
	s, ok := decodeString(v, "url", errs)
	if !ok {
		return nil
	}
	if err := urls.CheckURL(s); err != nil {
		errs["url"] = err.Error()
		return nil
	}
	return &s
}

func decodeEventTypes(v json.RawMessage, errs map[string]string) *[]string {
	var items []json.RawMessage
	if v[0] != '[' || json.Unmarshal(v, &items) != nil {
		errs["event_types"] = "must be an array of event types"
		return nil
	}
	known := fmt.Sprintf("known: %s (%q for all)", strings.Join(EventTypes(), ", "), AllTypes)
	if len(items) == 0 {
		errs["event_types"] = "must name at least one event type; " + known
		return nil
	}
	types := make([]string, 0, len(items))
	seen := map[string]bool{}
	for i, item := range items {
		var t string
		if len(item) == 0 || item[0] != '"' || json.Unmarshal(item, &t) != nil {
			errs["event_types"] = fmt.Sprintf("item %d must be a string", i+1)
			return nil
		}
		switch {
		case !KnownEventType(t):
			errs["event_types"] = fmt.Sprintf("item %d is not a known event type; %s", i+1, known)
			return nil
		case seen[t]:
			errs["event_types"] = fmt.Sprintf("item %d repeats an event type", i+1)
			return nil
		}
		seen[t] = true
		types = append(types, t)
	}
	if seen[AllTypes] && len(types) > 1 {
		errs["event_types"] = fmt.Sprintf("%q selects every type and stands alone", AllTypes)
		return nil
	}
	return &types
}

func decodeDescription(v json.RawMessage, errs map[string]string) *string {
	s, ok := decodeString(v, "description", errs)
	if !ok {
		return nil
	}
	if msg := checkText(s, MaxDescriptionLen); msg != "" {
		errs["description"] = msg
		return nil
	}
	return &s
}

// checkText bounds a free text field in characters and keeps control
// characters out of it, since it ends up in terminals and log viewers.
func checkText(s string, maxLen int) string {
	if utf8.RuneCountInString(s) > maxLen {
		return fmt.Sprintf("must be at most %d characters", maxLen)
	}
	if strings.ContainsFunc(s, unicode.IsControl) {
		return "must not contain control characters"
	}
	return ""
}

// decodeInt reads an optional integer within [1, hi]; null means def.
func decodeInt(raw map[string]json.RawMessage, name string, def, hi int, errs map[string]string) *int {
	v, ok := raw[name]
	if !ok {
		return nil
	}
	if isNullValue(v) {
		return &def
	}
	msg := fmt.Sprintf("must be an integer between 1 and %d", hi)
	// Only plain integers: 1e2 and 10.0 are numbers, but a limit written
	// so is more likely a mistake than a wish.
	if v[0] != '-' && (v[0] < '0' || v[0] > '9') {
		errs[name] = msg
		return nil
	}
	n, err := strconv.ParseInt(string(v), 10, 64)
	if err != nil || n < 1 || n > int64(hi) {
		errs[name] = msg
		return nil
	}
	i := int(n)
	return &i
}

func decodeMetadata(v json.RawMessage, errs map[string]string) *map[string]string {
	var m map[string]json.RawMessage
	if v[0] != '{' || json.Unmarshal(v, &m) != nil {
		errs["metadata"] = "must be an object of strings"
		return nil
	}
	if len(m) > MaxMetadataKeys {
		errs["metadata"] = fmt.Sprintf("must have at most %d keys", MaxMetadataKeys)
		return nil
	}
	out := make(map[string]string, len(m))
	for k, raw := range m {
		if k == "" || utf8.RuneCountInString(k) > MaxMetadataKeyLen || strings.ContainsFunc(k, unicode.IsControl) {
			errs["metadata"] = fmt.Sprintf("keys must be 1 to %d characters without control characters", MaxMetadataKeyLen)
			return nil
		}
		var s string
		if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
			errs["metadata"] = fmt.Sprintf("value of %q must be a string", k)
			return nil
		}
		if msg := checkText(s, MaxMetadataValueLen); msg != "" {
			errs["metadata"] = fmt.Sprintf("value of %q %s", k, msg)
			return nil
		}
		out[k] = s
	}
	return &out
}
