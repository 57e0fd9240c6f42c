package money

import (
	"errors"
	"testing"
)

func TestParseDecimal(t *testing.T) {
	tests := []struct {
		name    string
		in, cur string
		want    int64
		wantErr error
	}{
		{"whole", "10", "USD", 1000, nil},
		{"two decimals", "10.50", "USD", 1050, nil},
		{"one decimal", "0.1", "USD", 10, nil},
		{"float trap", "0.29", "USD", 29, nil},
		{"exponent exact", "1e2", "USD", 10000, nil},
		{"zero-decimal currency", "500", "JPY", 500, nil},
		{"three-decimal currency", "1.234", "KWD", 1234, nil},
		{"trailing zeros beyond exponent", "1.500", "USD", 150, nil},
		{"too many decimals", "10.505", "USD", 0, ErrTooManyDecimals},
		{"decimals on JPY", "5.5", "JPY", 0, ErrTooManyDecimals},
		{"tiny exponent", "1e-3", "USD", 0, ErrTooManyDecimals},
		{"zero", "0", "USD", 0, ErrNotPositive},
		{"negative", "-1.00", "USD", 0, ErrNotPositive},
		{"not a number", "ten", "USD", 0, ErrNotANumber},
		{"fraction syntax", "1/3", "USD", 0, ErrNotANumber},
		{"hex", "0x10", "USD", 0, ErrNotANumber},
		{"empty", "", "USD", 0, ErrNotANumber},
		{"huge", "1e30", "USD", 0, ErrTooLarge},
		{"unknown currency", "1", "XYZ", 0, ErrUnknownCurrency},
		{"lower-case currency", "1", "usd", 0, ErrUnknownCurrency},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseDecimal(tt.in, tt.cur)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("ParseDecimal(%q, %q) error = %v, want %v", tt.in, tt.cur, err, tt.wantErr)
			}
			if got != tt.want {
				t.Fatalf("ParseDecimal(%q, %q) = %d, want %d", tt.in, tt.cur, got, tt.want)
			}
		})
	}
}

func TestMultiply(t *testing.T) {
	if got, err := Multiply(1050, 2); err != nil || got != 2100 {
		t.Fatalf("Multiply(1050, 2) = %d, %v", got, err)
	}
	if _, err := Multiply(MaxMinor, 2); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Multiply overflow error = %v, want ErrTooLarge", err)
	}
}

func TestFormat(t *testing.T) {
	tests := []struct {
		minor int64
		cur   string
		want  string
	}{
		{2100, "USD", "21.00 USD"},
		{5, "EUR", "0.05 EUR"},
		{500, "JPY", "500 JPY"},
		{1234, "KWD", "1.234 KWD"},
	}
	for _, tt := range tests {
		if got := Format(tt.minor, tt.cur); got != tt.want {
			t.Errorf("Format(%d, %q) = %q, want %q", tt.minor, tt.cur, got, tt.want)
		}
	}
}
