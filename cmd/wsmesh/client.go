package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/wsmesh/wsmesh/internal/wsclient"
)

func init() {
	var (
		headers      []string
		subprotocols []string
		binary       bool
		wait         time.Duration
		connectTo    []string
	)
	cmd := &cobra.Command{
		Use:   "client URL",
		Short: "Interactive WebSocket client (like python3 -m websockets URL)",
		Long: `Connect to a ws:// or wss:// URL, send each line of standard input as a
message and print each message received as "< message" ("< (binary) hex" for
binary messages). At end of input the connection is closed with 1000 and
"Connection closed: 1000 (OK)." is printed, as python3 -m websockets does.

When standard input is a terminal a "> " prompt is shown and messages appear
above it. Otherwise (pipe or file) no prompts or escape sequences are written;
after the input ends the client waits until every line has been answered, or
--wait passes, before closing.`,
		Example: `  wsmesh client ws://websockets-server.default.svc.cluster.local:8080
  printf 'hello\nworld\n' | wsmesh client ws://127.0.0.1:8080`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			header, err := wsclient.ParseHeaders(headers)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			conn := map[string]string{}
			for _, c := range connectTo {
				from, to, ok := strings.Cut(c, "=")
				if !ok || from == "" || to == "" {
					return &exitError{code: 2, err: fmt.Errorf("--connect-to %q: want HOST:PORT=ADDR:PORT", c)}
				}
				conn[from] = to
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
			defer stop()
			err = wsclient.Run(ctx, wsclient.Options{
				URL:          args[0],
				Header:       header,
				Subprotocols: subprotocols,
				Binary:       binary,
				Interactive:  wsclient.IsTerminal(os.Stdin),
				Wait:         wait,
				ConnectTo:    conn,
			}, os.Stdin, cmd.OutOrStdout())
			var cerr *wsclient.ConnectError
			if errors.As(err, &cerr) {
				return &exitError{code: 1, err: err}
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringArrayVarP(&headers, "header", "H", nil, "extra handshake header 'Name: value' (repeatable)")
	f.StringArrayVar(&subprotocols, "subprotocol", nil, "subprotocol to offer (repeatable, in order of preference)")
	f.BoolVar(&binary, "binary", false, "send each line as a binary message")
	f.DurationVar(&wait, "wait", wsclient.DefaultWait, "without a terminal: how long to wait for replies after the input ends")
	f.StringArrayVar(&connectTo, "connect-to", nil, "connect to ADDR:PORT whenever the URL names HOST:PORT, as HOST:PORT=ADDR:PORT (repeatable; no DNS needed)")
	rootCmd.AddCommand(cmd)
}
