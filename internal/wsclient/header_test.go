package wsclient

import (
	"net/http"
	"reflect"
	"testing"
)

func TestParseHeaders(t *testing.T) {
	got, err := ParseHeaders([]string{"X-Token: abc", "x-token:  def ", "Host: example.com", "Empty:"})
	if err != nil {
		t.Fatal(err)
	}
	want := http.Header{"X-Token": {"abc", "def"}, "Host": {"example.com"}, "Empty": {""}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for _, bad := range []string{"no colon", ": value", "Bad Name: x", "X: a\r\nInjected: b"} {
		if _, err := ParseHeaders([]string{bad}); err == nil {
			t.Errorf("ParseHeaders(%q) succeeded", bad)
		}
	}
}
