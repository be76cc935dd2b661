package testutil

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

func TestLineFormatDecode(t *testing.T) {
	recs, err := LineFormat{}.Decode([]byte("{\"a\":1}\n{\"b\":\"x\"}\n{\"c\":"))
	if err != nil || len(recs) != 2 || recs[0]["a"] != 1.0 || recs[1]["b"] != "x" {
		t.Fatalf("complete lines: %v %v", recs, err)
	}

	recs, err = LineFormat{UseNumber: true}.Decode([]byte("{\"n\":101}\n"))
	if err != nil || len(recs) != 1 || recs[0]["n"] != json.Number("101") {
		t.Fatalf("UseNumber: %v %v", recs, err)
	}

	mixed := "time=now level=INFO msg=listening\n\n  {\"path\":\"/\"}\nnot json\n"
	recs, err = LineFormat{SkipText: true}.Decode([]byte(mixed))
	if err != nil || len(recs) != 1 || recs[0]["path"] != "/" {
		t.Fatalf("SkipText: %v %v", recs, err)
	}

	for _, bad := range []string{"not json\n", "\n", "null\n", "{\"a\":1} {\"b\":2}\n", "[1]\n"} {
		if _, err := (LineFormat{}).Decode([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	if _, err := (LineFormat{SkipText: true}).Decode([]byte("{broken\n")); err == nil {
		t.Error("SkipText: a broken JSON line is not an error")
	}
}

func TestLinesWait(t *testing.T) {
	var l Lines
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 50 {
			fmt.Fprintf(&l, "{\"i\":%d}\n", i)
		}
	}()
	recs := l.Wait(t, 50)
	<-done
	if len(recs) != 50 || recs[49]["i"] != 49.0 {
		t.Fatalf("Wait: %d records, last %v", len(recs), recs[len(recs)-1])
	}
	if got := strings.Count(l.String(), "\n"); got != 50 {
		t.Fatalf("String: %d lines", got)
	}
	if n := len(l.Records(t)); n != 50 {
		t.Fatalf("Records: %d", n)
	}
}
