package wsclient

import (
	"crypto/sha1"
	"encoding/base64"
)

// acceptKey computes Sec-WebSocket-Accept for a hand-written server.
func acceptKey(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}
