package event

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"
	"unicode/utf8"
)

// Member is one member of a JSON object: its key, decoded, and its value as
// it stands in the body.
type Member struct {
	Key   string
	Value []byte
}

// ObjectMembers returns the members of body, in order, when body is one
// JSON object as strict as DecodeJSON wants it: valid UTF-8, nothing after
// the object, no key twice in any object it contains. It is one pass over
// the body, where decoding into a map of raw messages takes three; the
// values alias body. Anything else is a *SyntaxError.
func ObjectMembers(body []byte) ([]Member, error) {
	if err := syntaxCheck(body); err != nil {
		return nil, err
	}
	s := scanner{b: body}
	s.ws()
	if s.b[s.i] != '{' {
		return nil, &SyntaxError{Reason: "body must be a JSON object"}
	}
	var members []Member
	if key, dup := s.object(func(key string, value []byte) {
		members = append(members, Member{Key: key, Value: value})
	}); dup {
		return nil, &SyntaxError{Reason: fmt.Sprintf("duplicate key %q", key)}
	}
	return members, nil
}

// syntaxCheck reports a body that is not one well-formed JSON value in
// valid UTF-8, with the same reasons as DecodeJSON.
func syntaxCheck(body []byte) error {
	// json.Valid lets invalid UTF-8 inside strings pass.
	if utf8.Valid(body) && json.Valid(body) {
		return nil
	}
	// Only a broken body pays for a second look, which finds the reason.
	var v any
	return DecodeJSON(body, &v)
}

// duplicateKey finds an object key that occurs twice in the same object.
// encoding/json silently keeps the last one, so a body that a signature
// verifier, a proxy and this decoder could read differently is refused.
// body must already be known to be valid JSON.
func duplicateKey(body []byte) (string, bool) {
	s := scanner{b: body}
	return s.value()
}

// scanner walks JSON already known to be valid, so it never checks syntax:
// it only finds where values start and end, and the keys of every object.
type scanner struct {
	b []byte
	i int
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// value skips the value at s.i and reports the first key that occurs twice
// in one of its objects.
func (s *scanner) value() (string, bool) {
	s.ws()
	switch s.b[s.i] {
	case '{':
		return s.object(nil)
	case '[':
		s.i++
		s.ws()
		if s.b[s.i] == ']' {
			s.i++
			return "", false
		}
		for {
			if key, dup := s.value(); dup {
				return key, true
			}
			s.ws()
			s.i++ // ',' or ']'
			if s.b[s.i-1] == ']' {
				return "", false
			}
		}
	case '"':
		s.str()
	default: // a number, true, false or null
		for s.i < len(s.b) {
			switch s.b[s.i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return "", false
			}
			s.i++
		}
	}
	return "", false
}

// smallObject is how many keys an object may have before its keys are
// looked up in a map rather than a list.
const smallObject = 16

// object walks the object at s.i, calling member (when not nil) with each
// key and raw value, and reports the first key that occurs twice in it or
// in an object inside it.
func (s *scanner) object(member func(key string, value []byte)) (string, bool) {
	s.i++ // '{'
	s.ws()
	if s.b[s.i] == '}' {
		s.i++
		return "", false
	}
	var list []string
	var set map[string]struct{}
	for {
		s.ws()
		key := s.key()
		switch {
		case set != nil:
			if _, seen := set[key]; seen {
				return key, true
			}
			set[key] = struct{}{}
		case slices.Contains(list, key):
			return key, true
		case len(list) < smallObject:
			list = append(list, key)
		default:
			set = make(map[string]struct{}, 2*smallObject)
			for _, k := range list {
				set[k] = struct{}{}
			}
			set[key] = struct{}{}
		}
		s.ws()
		s.i++ // ':'
		s.ws()
		start := s.i
		if key, dup := s.value(); dup {
			return key, true
		}
		if member != nil {
			member(key, s.b[start:s.i])
		}
		s.ws()
		s.i++ // ',' or '}'
		if s.b[s.i-1] == '}' {
			return "", false
		}
	}
}

// key reads the object key at s.i, decoded as encoding/json decodes it.
func (s *scanner) key() string {
	raw, escaped := s.str()
	if !escaped {
		return string(raw[1 : len(raw)-1])
	}
	var k string
	_ = json.Unmarshal(raw, &k) // valid JSON: a string always decodes
	return k
}

// str skips the string at s.i and returns it with its quotes, and whether
// it holds an escape.
func (s *scanner) str() ([]byte, bool) {
	start := s.i
	escaped := false
	for s.i++; ; s.i++ {
		switch s.b[s.i] {
		case '\\':
			escaped = true
			s.i++ // the escaped byte, which may be a quote
		case '"':
			s.i++
			return s.b[start:s.i], escaped
		}
	}
}

// StringValue returns the JSON string value as encoding/json decodes it,
// and false when value is not a string. value must come from valid JSON,
// such as a Member's.
func StringValue(value []byte) (string, bool) {
	if len(value) == 0 || value[0] != '"' {
		return "", false
	}
	s := scanner{b: value}
	raw, escaped := s.str()
	if !escaped {
		return string(raw[1 : len(raw)-1]), true
	}
	var v string
	if err := json.Unmarshal(raw, &v); err != nil {
		return "", false
	}
	return v, true
}

// AppendString appends s as a JSON string, exactly as encoding/json.Marshal
// writes it: with <, > and & escaped for HTML, control characters escaped,
// U+2028 and U+2029 escaped for JavaScript, and each byte of invalid UTF-8
// replaced by U+FFFD.
func AppendString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '\\', '"':
				dst = append(dst, '\\', c)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[r&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// AppendTime appends t as a JSON string, exactly as encoding/json.Marshal
// writes a time.Time: RFC 3339 with the fraction of a second it has. A year
// outside 0000 to 9999 is an error, as for encoding/json.
func AppendTime(dst []byte, t time.Time) ([]byte, error) {
	dst = append(dst, '"')
	dst, err := t.AppendText(dst)
	if err != nil {
		return nil, fmt.Errorf("json: %w", err)
	}
	return append(dst, '"'), nil
}
