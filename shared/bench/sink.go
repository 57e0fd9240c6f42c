package bench

import (
	"bufio"
	"encoding/json"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// receipt is one email as the bench saw it arrive.
type receipt struct {
	to string
	at time.Time
}

// logSink reads the emails of a notifier that logs them instead of
// sending them (no SMTP_ADDR): one JSON line per email, "Sending
// confirmation email to <address> for order <id>", stamped with its time.
// It reads the log file incrementally: each call parses only what was
// appended since the last.
type logSink struct {
	path string

	mu       sync.Mutex
	offset   int64
	partial  []byte
	receipts []receipt
}

const logEmailPrefix = "Sending confirmation email to "

// read parses what the notifier logged since the last read and returns
// every email so far.
func (s *logSink) read() []receipt {
	s.mu.Lock()
	defer s.mu.Unlock()
	f, err := os.Open(s.path)
	if err != nil {
		return s.receipts
	}
	defer f.Close()
	if _, err := f.Seek(s.offset, io.SeekStart); err != nil {
		return s.receipts
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return s.receipts
	}
	s.offset += int64(len(data))
	data = append(s.partial, data...)
	last := strings.LastIndexByte(string(data), '\n')
	if last < 0 {
		s.partial = data
		return s.receipts
	}
	s.partial = append([]byte(nil), data[last+1:]...)
	sc := bufio.NewScanner(strings.NewReader(string(data[:last+1])))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if !strings.Contains(string(line), logEmailPrefix) {
			continue
		}
		var rec struct {
			Time time.Time `json:"time"`
			Msg  string    `json:"msg"`
		}
		if json.Unmarshal(line, &rec) != nil {
			continue
		}
		rest, ok := strings.CutPrefix(rec.Msg, logEmailPrefix)
		if !ok {
			continue
		}
		to, _, _ := strings.Cut(rest, " ")
		s.receipts = append(s.receipts, receipt{to: to, at: rec.Time})
	}
	return s.receipts
}
