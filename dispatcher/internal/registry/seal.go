package registry

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
)

// ErrUndecryptable means a stored secret does not open under SECRETS_KEY:
// the key is not the one it was sealed with, or the record was tampered
// with or copied from another subscription.
var ErrUndecryptable = errors.New("a subscription secret does not decrypt under SECRETS_KEY (a different key, or a tampered record)")

// sealer encrypts secrets with AES-256-GCM. The subscription's id is the
// additional data, so that a ciphertext copied into another subscription's
// record does not open there.
type sealer struct {
	aead cipher.AEAD
}

func newSealer(key [32]byte) (*sealer, error) {
	block, err := aes.NewCipher(key[:])
	if err != nil {
		return nil, fmt.Errorf("secrets key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("secrets key: %w", err)
	}
	return &sealer{aead: aead}, nil
}

// additionalData names the purpose as well as the subscription, so that
// the key could seal other things one day without them being mistaken for
// a secret.
func additionalData(id string) []byte {
	return []byte("jethook subscription secret v1\x00" + id)
}

// seal returns base64(nonce || ciphertext || tag). Nonces are random: 96
// bits per seal, with far fewer than 2^32 seals under one key, keeps the
// chance of a repeat negligible.
func (s *sealer) seal(id, plaintext string) (string, error) {
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(plaintext)+s.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return "", fmt.Errorf("nonce: %w", err)
	}
	out := s.aead.Seal(nonce, nonce, []byte(plaintext), additionalData(id))
	return base64.StdEncoding.EncodeToString(out), nil
}

func (s *sealer) open(id, sealed string) (string, error) {
	raw, err := base64.StdEncoding.DecodeString(sealed)
	if err != nil || len(raw) < s.aead.NonceSize()+s.aead.Overhead() {
		return "", ErrUndecryptable
	}
	n := s.aead.NonceSize()
	plain, err := s.aead.Open(nil, raw[:n], raw[n:], additionalData(id))
	if err != nil {
		return "", ErrUndecryptable
	}
	return string(plain), nil
}
