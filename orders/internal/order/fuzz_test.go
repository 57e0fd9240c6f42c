package order

import (
	"errors"
	"testing"

	"github.com/jethook/jethook/shared/event"
	"github.com/jethook/jethook/shared/money"
)

// fuzzSeeds reach every branch of ParseRequest.
var fuzzSeeds = []string{
	`{"product_name":"Book","quantity":2,"price_per_item":10.50,"customer_email":"ada@example.com"}`,
	`{"product_name":"Tea","quantity":3,"price_per_item":"0.29","customer_email":"bo@example.org","currency":"EUR"}`,
	`{"product_name":"x","quantity":1,"price_per_item":500,"customer_email":"a@b.co","currency":"JPY"}`,
	`{"product_name":"x","quantity":1e3,"price_per_item":1.5e1,"customer_email":"a@b.co"}`,
	`{"product_name":"x","quantity":1,"quantity":2}`,
	`{"product_\u006eame":"B\u00f6ok","quantity":1,"price_per_item":"-1","customer_email":"a@b.co","x":{"y":[1,{"z":null}]}}`,
	`{"product_name":null,"quantity":"1","price_per_item":"1.","customer_email":5,"currency":"usd"}`,
	`{"product_name":"x","quantity":-0,"price_per_item":" 1","customer_email":"a@b.co","currency":null}`,
	`{"product_name":"x","quantity":10000,"price_per_item":"99999999999999999999.99","customer_email":"a@b.co"}`,
	`[]`, `null`, `{}`, `{"a":`, `{"a":1} {}`, "{\"a\":\"\xff\"}",
}

// FuzzParseRequest: any body either yields a typed error (400 or 422) or a
// request that meets every rule, with an amount that is exactly price ×
// quantity. It never panics.
func FuzzParseRequest(f *testing.F) {
	for _, seed := range fuzzSeeds {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := ParseRequest(body)
		if err != nil {
			var se *event.SyntaxError
			var ve *event.ValidationError
			if !errors.As(err, &se) && !errors.As(err, &ve) {
				t.Fatalf("untyped error %T: %v", err, err)
			}
			if ve != nil && len(ve.Fields) == 0 {
				t.Fatal("ValidationError without fields")
			}
			return
		}
		if event.ValidProductName(r.ProductName) != "" || !event.ValidEmail(r.CustomerEmail) || !money.ValidCurrency(r.Currency) {
			t.Fatalf("accepted an invalid request: %+v", r)
		}
		if r.Quantity < 1 || r.Quantity > event.MaxQuantity || r.PriceMinor <= 0 {
			t.Fatalf("accepted out-of-range numbers: %+v", r)
		}
		if want, err := money.Multiply(r.PriceMinor, r.Quantity); err != nil || want != r.AmountMinor {
			t.Fatalf("amount %d != %d × %d", r.AmountMinor, r.PriceMinor, r.Quantity)
		}
	})
}
