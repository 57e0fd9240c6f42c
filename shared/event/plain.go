package event

import (
	"strconv"
	"unicode/utf8"
)

// decodePlain is Decode's fast path: it decodes an event written the way
// Marshal writes one (unless a string of it needed an escape: a quote, a
// backslash, a control character, & < > or U+2028 and U+2029), and
// reports false for any other body, which the full decoder then reads.
// Plain means: one object of the four members, data
// one object of its six, each member once and in any order, strings
// without escapes, integers without fraction or exponent, JSON white space
// anywhere between. It never makes an error of its own, and it accepts
// only what the full decoder accepts, as the same event: a body it is
// unsure of, or an event that breaks the contract, goes the long way.
func decodePlain(body []byte) (OrderPaid, bool) {
	if !utf8.Valid(body) {
		return OrderPaid{}, false
	}
	p := plain{b: body}
	var e OrderPaid
	var seen, seenData uint8
	ok := p.object(func(key []byte) bool {
		switch string(key) {
		case "id":
			return p.once(&seen, 1) && p.str(&e.ID)
		case "type":
			return p.once(&seen, 2) && p.str(&e.Type)
		case "timestamp":
			raw, ok := p.quoted()
			return ok && p.once(&seen, 4) && e.Timestamp.UnmarshalJSON(raw) == nil
		case "data":
			return p.once(&seen, 8) && p.object(func(key []byte) bool {
				d := &e.Data
				switch string(key) {
				case "order_id":
					return p.once(&seenData, 1) && p.str(&d.OrderID)
				case "customer_email":
					return p.once(&seenData, 2) && p.str(&d.CustomerEmail)
				case "product_name":
					return p.once(&seenData, 4) && p.str(&d.ProductName)
				case "quantity":
					return p.once(&seenData, 8) && p.int(&d.Quantity)
				case "amount_minor":
					return p.once(&seenData, 16) && p.int(&d.AmountMinor)
				case "currency":
					return p.once(&seenData, 32) && p.str(&d.Currency)
				}
				return false
			})
		}
		return false
	})
	if !ok {
		return OrderPaid{}, false
	}
	p.ws()
	if p.i != len(p.b) || len(e.Validate()) > 0 {
		return OrderPaid{}, false
	}
	return e, true
}

// plain reads the plain JSON decodePlain takes; every method reports false
// at the first byte it is unsure of.
type plain struct {
	b []byte
	i int
}

func (p *plain) ws() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// next consumes c, after white space, if it comes next.
func (p *plain) next(c byte) bool {
	p.ws()
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

// once marks bit in seen, and reports false if it was marked already: a
// key twice is the full decoder's to refuse.
func (*plain) once(seen *uint8, bit uint8) bool {
	if *seen&bit != 0 {
		return false
	}
	*seen |= bit
	return true
}

// quoted reads a string without escapes or control characters and
// returns it with its quotes.
func (p *plain) quoted() ([]byte, bool) {
	p.ws()
	if p.i >= len(p.b) || p.b[p.i] != '"' {
		return nil, false
	}
	for j := p.i + 1; j < len(p.b); j++ {
		switch c := p.b[j]; {
		case c == '"':
			raw := p.b[p.i : j+1]
			p.i = j + 1
			return raw, true
		case c == '\\' || c < 0x20:
			return nil, false
		}
	}
	return nil, false
}

// str reads a string as quoted does into dst.
func (p *plain) str(dst *string) bool {
	raw, ok := p.quoted()
	if ok {
		*dst = string(raw[1 : len(raw)-1])
	}
	return ok
}

// int reads an integer of at most 18 digits, without fraction or exponent.
func (p *plain) int(dst *int64) bool {
	p.ws()
	start := p.i
	if p.i < len(p.b) && p.b[p.i] == '-' {
		p.i++
	}
	digits := p.i
	for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
		p.i++
	}
	n := p.i - digits
	if n == 0 || n > 18 || (n > 1 && p.b[digits] == '0') {
		return false
	}
	if p.i < len(p.b) && (p.b[p.i] == '.' || p.b[p.i] == 'e' || p.b[p.i] == 'E') {
		return false
	}
	v, err := strconv.ParseInt(string(p.b[start:p.i]), 10, 64)
	*dst = v
	return err == nil
}

// object reads an object, calling member after each key and its colon to
// read the value.
func (p *plain) object(member func(key []byte) bool) bool {
	if !p.next('{') {
		return false
	}
	if p.next('}') {
		return true
	}
	for {
		key, ok := p.quoted()
		if !ok || !p.next(':') || !member(key[1:len(key)-1]) {
			return false
		}
		if !p.next(',') {
			return p.next('}')
		}
	}
}

// PlainID returns the "id" member of body, an event of any type, when body
// is plain JSON: an object whose strings have no escapes, nested at most
// maxPlainDepth deep, with one key "id" and no other that encoding/json
// would take for it. It reports false for anything else, where the caller
// decodes the body in full. What it returns is what encoding/json's
// Unmarshal finds in that field.
func PlainID(body []byte) (string, bool) {
	if !utf8.Valid(body) {
		return "", false
	}
	p := plain{b: body}
	var id string
	var seen uint8
	ok := p.object(func(key []byte) bool {
		switch {
		case string(key) == "id":
			return p.once(&seen, 1) && p.str(&id)
		case foldsToID(key):
			return false
		}
		return p.value(1)
	})
	if !ok || seen == 0 {
		return "", false
	}
	if p.ws(); p.i != len(p.b) {
		return "", false
	}
	return id, true
}

// foldsToID reports a key other than "id" that encoding/json would match
// to the field "id", ignoring case; any key outside ASCII counts, rather
// than follow Unicode's case folding here.
func foldsToID(key []byte) bool {
	for _, c := range key {
		if c >= utf8.RuneSelf {
			return true
		}
	}
	return len(key) == 2 && (key[0]|0x20) == 'i' && (key[1]|0x20) == 'd'
}

// maxPlainDepth bounds the nesting PlainID reads.
const maxPlainDepth = 32

// value reads any plain JSON value at nesting depth.
func (p *plain) value(depth int) bool {
	p.ws()
	if p.i >= len(p.b) || depth > maxPlainDepth {
		return false
	}
	switch c := p.b[p.i]; {
	case c == '"':
		_, ok := p.quoted()
		return ok
	case c == '{':
		return p.object(func([]byte) bool { return p.value(depth + 1) })
	case c == '[':
		p.i++
		if p.next(']') {
			return true
		}
		for {
			if !p.value(depth + 1) {
				return false
			}
			if !p.next(',') {
				return p.next(']')
			}
		}
	case c == '-' || c >= '0' && c <= '9':
		return p.number()
	}
	for _, lit := range []string{"true", "false", "null"} {
		if len(p.b)-p.i >= len(lit) && string(p.b[p.i:p.i+len(lit)]) == lit {
			p.i += len(lit)
			return true
		}
	}
	return false
}

// number reads a JSON number: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
func (p *plain) number() bool {
	digits := func() int {
		start := p.i
		for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
			p.i++
		}
		return p.i - start
	}
	if p.b[p.i] == '-' {
		p.i++
	}
	start := p.i
	if n := digits(); n == 0 || (n > 1 && p.b[start] == '0') {
		return false
	}
	if p.i < len(p.b) && p.b[p.i] == '.' {
		p.i++
		if digits() == 0 {
			return false
		}
	}
	if p.i < len(p.b) && (p.b[p.i] == 'e' || p.b[p.i] == 'E') {
		p.i++
		if p.i < len(p.b) && (p.b[p.i] == '+' || p.b[p.i] == '-') {
			p.i++
		}
		if digits() == 0 {
			return false
		}
	}
	return true
}
