package email

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/emersion/go-smtp"
)

// Sender delivers one email. commit is called once the message has been
// transmitted, just before its final "." is sent, with the longest the
// answer may take: from the dot on, the relay may own the message, and
// the worker secures its claim on the event for that long. An error from
// commit aborts the send without the dot, so that nothing is delivered.
// An error from Send is a *SendError when the relay refused or the
// conversation broke.
type Sender interface {
	Send(ctx context.Context, m Message, commit Commit) error
}

// Commit secures a send just before the point of no return; wait is how
// long the answer may take after it.
type Commit func(ctx context.Context, wait time.Duration) error

// Stages of an SMTP conversation, as a SendError names them.
const (
	StageConnect = "connect" // dial, greeting, EHLO, STARTTLS, AUTH
	StageMail    = "MAIL"
	StageRcpt    = "RCPT"
	StageData    = "DATA" // the DATA command and the message text
	StageCommit  = "commit"
	StageDot     = "end of data" // the final "." and its answer
)

// SendError is a failed send: where it failed and what the relay said.
type SendError struct {
	Stage string
	// Code is the relay's reply code, 0 when it gave none (a refused
	// connection, a timeout, a broken connection).
	Code int
	// Reply is the relay's reply text, with its enhanced status code.
	Reply string
	Err   error
}

func (e *SendError) Error() string {
	if e.Code != 0 {
		return fmt.Sprintf("smtp %s refused: %d %s", e.Stage, e.Code, e.Reply)
	}
	return fmt.Sprintf("smtp %s: %v", e.Stage, e.Err)
}

func (e *SendError) Unwrap() error { return e.Err }

// Permanent reports a 5xx reply: the relay refuses this email for good
// (an unknown or suppressed recipient, a policy), and sending it again
// cannot change that.
func (e *SendError) Permanent() bool { return e.Code >= 500 && e.Code < 600 }

// Unknown reports a message whose final dot went out but whose answer
// never came: the relay may have taken it. It is retried, and may arrive
// twice; its Message-ID lets mail systems fold the copies.
func (e *SendError) Unknown() bool { return e.Stage == StageDot && e.Code == 0 }

// sendError classifies err at stage.
func sendError(stage string, err error) *SendError {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		reply := se.Message
		if se.EnhancedCode != (smtp.EnhancedCode{}) && se.EnhancedCode != smtp.NoEnhancedCode {
			reply = strconv.Itoa(se.EnhancedCode[0]) + "." + strconv.Itoa(se.EnhancedCode[1]) + "." +
				strconv.Itoa(se.EnhancedCode[2]) + " " + reply
		}
		return &SendError{Stage: stage, Code: se.Code, Reply: reply, Err: err}
	}
	return &SendError{Stage: stage, Err: err}
}
