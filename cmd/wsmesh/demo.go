package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/wsmesh/wsmesh/internal/demo"
)

func init() {
	var o demo.Options
	var verbose bool
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Play the guide on this machine: echo server, two sidecars, the client's hello/world",
		Long: `Play the guide on this machine, in one process: start the echo server (the
guide's websockets-server app), the server's sidecar and the client's sidecar
from the shipped example configuration, send hello and world through both
sidecars, print the transcript and both sidecars' access-log lines, and stop.

--h2 plays the guide's HTTP/2 section (DestinationRule h2UpgradePolicy UPGRADE
and EnvoyFilter allow_connect). --h2 --no-allow-connect leaves the EnvoyFilter
out to show the fallback to HTTP/1.1 (or, with --strict, Envoy's 503).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			o.Out = cmd.OutOrStdout()
			if verbose {
				o.Log = cmd.ErrOrStderr()
			}
			return demo.Run(ctx, o)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.H2, "h2", false, "tunnel the WebSocket over HTTP/2 between the sidecars (the guide's second half)")
	f.BoolVar(&o.NoAllowConnect, "no-allow-connect", false, "with --h2: leave out the EnvoyFilter that allows extended CONNECT at the server sidecar")
	f.BoolVar(&o.Strict, "strict", false, "answer 503 like Envoy instead of falling back to HTTP/1.1 when extended CONNECT is not allowed")
	f.BoolVar(&o.Keep, "keep", false, "leave everything running and print how to connect")
	f.StringVar(&o.ConfigDir, "config", "", "configuration directory to use instead of the shipped example")
	f.StringSliceVar(&o.Messages, "message", nil, "messages the client sends (default hello,world)")
	f.StringVar(&o.ClientAdmin, "client-admin", "127.0.0.1:15000", "client sidecar admin address")
	f.StringVar(&o.ServerAdmin, "server-admin", "127.0.0.1:15001", "server sidecar admin address")
	f.BoolVarP(&verbose, "verbose", "v", false, "show the components' logs on standard error")
	rootCmd.AddCommand(cmd)
}
