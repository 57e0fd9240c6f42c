package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jethook/jethook/shared/chaos"
)

func TestLoad(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		want    chaos.Config // Seed is checked only when set
		wantErr []string
	}{
		{
			name: "defaults",
			want: chaos.Config{Duration: 2 * time.Minute, Rate: 5},
		},
		{
			name: "all set",
			env:  map[string]string{"CHAOS_SEED": "42", "CHAOS_DURATION": "30s", "CHAOS_RATE": "2.5", "CHAOS_FAULTS": "120"},
			want: chaos.Config{Seed: 42, Duration: 30 * time.Second, Rate: 2.5, Faults: 120},
		},
		{
			name: "seed zero is a seed",
			env:  map[string]string{"CHAOS_SEED": "0"},
			want: chaos.Config{Seed: 0, Duration: 2 * time.Minute, Rate: 5},
		},
		{
			name:    "every bad variable named",
			env:     map[string]string{"CHAOS_SEED": "-1", "CHAOS_DURATION": "5s", "CHAOS_RATE": "banana", "CHAOS_FAULTS": "0"},
			wantErr: []string{`invalid CHAOS_SEED="-1"`, `invalid CHAOS_DURATION="5s"`, `invalid CHAOS_RATE="banana"`, `invalid CHAOS_FAULTS="0"`},
		},
		{
			name:    "rate out of range",
			env:     map[string]string{"CHAOS_RATE": "0"},
			wantErr: []string{`invalid CHAOS_RATE="0"`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := load(func(k string) string { return tt.env[k] })
			if len(tt.wantErr) > 0 {
				if err == nil {
					t.Fatalf("no error, config %+v", cfg)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not contain %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Duration != tt.want.Duration || cfg.Rate != tt.want.Rate || cfg.Faults != tt.want.Faults {
				t.Errorf("config = %+v, want %+v", cfg, tt.want)
			}
			if _, set := tt.env["CHAOS_SEED"]; set && cfg.Seed != tt.want.Seed {
				t.Errorf("seed = %d, want %d", cfg.Seed, tt.want.Seed)
			}
			if cfg.Seed < 0 {
				t.Errorf("seed = %d, want a non-negative seed", cfg.Seed)
			}
		})
	}
}

func TestRunRejectsArguments(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"jethook-chaos", "--seed=1"}, func(string) string { return "" }, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "CHAOS_SEED") {
		t.Fatalf("run with an argument = %v, want an error naming the variables", err)
	}
}
