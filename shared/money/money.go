package money

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"strings"
)

// Errors returned by ParseDecimal. They describe the input, never echo it.
var (
	ErrNotANumber      = errors.New("must be a decimal number such as 10.50")
	ErrNotPositive     = errors.New("must be greater than zero")
	ErrTooManyDecimals = errors.New("has more decimal places than the currency allows")
	ErrTooLarge        = errors.New("is too large")
	ErrUnknownCurrency = errors.New("is not an ISO 4217 currency code")
)

// MaxMinor bounds every amount we accept, far below int64 overflow, so that
// amount × quantity can be checked with plain integer arithmetic.
const MaxMinor = int64(1) << 53

// Exponent returns the number of minor-unit digits of an ISO 4217 currency
// code (2 for USD, 0 for JPY, 3 for KWD) and whether the code is known.
func Exponent(code string) (int, bool) {
	if len(code) != 3 {
		return 0, false
	}
	e, ok := exponents[code]
	return e, ok
}

// ValidCurrency reports whether code is an upper-case ISO 4217 code we know.
func ValidCurrency(code string) bool {
	_, ok := Exponent(code)
	return ok
}

// ParseDecimal turns a decimal string such as "10.5" into minor units of
// currency ("1050" for USD). It is exact: the string is parsed as a
// rational, never as a float. Exponent notation ("1e2") is accepted only when
// it denotes an amount with no more decimals than the currency allows.
func ParseDecimal(s, currency string) (int64, error) {
	exp, ok := Exponent(currency)
	if !ok {
		return 0, ErrUnknownCurrency
	}
	s = strings.TrimSpace(s)
	if s == "" || len(s) > 64 || strings.ContainsAny(s, "/_xXpP") {
		return 0, ErrNotANumber
	}
	r, ok := new(big.Rat).SetString(s)
	if !ok {
		return 0, ErrNotANumber
	}
	if r.Sign() <= 0 {
		return 0, ErrNotPositive
	}
	scaled := new(big.Rat).Mul(r, new(big.Rat).SetInt(new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(exp)), nil)))
	if !scaled.IsInt() {
		return 0, ErrTooManyDecimals
	}
	n := scaled.Num()
	if !n.IsInt64() || n.Int64() > MaxMinor {
		return 0, ErrTooLarge
	}
	return n.Int64(), nil
}

// Multiply returns minor × quantity, or ErrTooLarge when the product exceeds
// MaxMinor.
func Multiply(minor int64, quantity int64) (int64, error) {
	if minor < 0 || quantity < 0 {
		return 0, ErrNotPositive
	}
	if quantity != 0 && minor > math.MaxInt64/quantity {
		return 0, ErrTooLarge
	}
	p := minor * quantity
	if p > MaxMinor {
		return 0, ErrTooLarge
	}
	return p, nil
}

// Format renders minor units as a human amount with the currency code, for
// example "21.00 USD" or "500 JPY".
func Format(minor int64, currency string) string {
	exp, ok := Exponent(currency)
	if !ok {
		return fmt.Sprintf("%d %s (minor units)", minor, currency)
	}
	sign := ""
	if minor < 0 {
		sign = "-"
		minor = -minor
	}
	if exp == 0 {
		return fmt.Sprintf("%s%d %s", sign, minor, currency)
	}
	div := int64(math.Pow10(exp))
	return fmt.Sprintf("%s%d.%0*d %s", sign, minor/div, exp, minor%div, currency)
}
