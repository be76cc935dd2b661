package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/wsmesh/wsmesh/internal/bench"
	"github.com/wsmesh/wsmesh/internal/wsclient"
)

func init() {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "WebSocket load generator and peer-comparison helpers",
		Long: `Measure a WebSocket path (direct to an echo server, or through proxies) on
this machine. Each mode opens its connections, warms up, measures for
--duration and prints a table (and a JSON report with --json). --pids samples
proxy processes from /proc: CPU time per message and resident memory.
Only loopback addresses are dialled.

  latency     1 connection, 64 B ping-pong: round-trip p50/p99/p99.9
  throughput  64 connections, 1 KiB ping-pong: messages per second
  stream      4 connections, 64 KiB messages, 8 in flight each: MB/s
  upgrade     open, upgrade, close handshake, close, on 8 workers: per second
  idle        hold --conns idle WebSockets: proxies' RSS per connection

bench/compare.sh runs these against wsmesh and peer proxies.`,
		Example: `  wsmesh echo --listen 127.0.0.1:21000 &
  wsmesh bench latency ws://127.0.0.1:21000/
  wsmesh bench throughput ws://websockets-server.default.svc.cluster.local:8080/ \
      --connect-to websockets-server.default.svc.cluster.local:8080=127.0.0.1:8080 \
      --pids client=$CLIENT_PID,server=$SERVER_PID --json out.json`,
	}
	for _, mode := range bench.Modes {
		cmd.AddCommand(benchModeCmd(mode))
	}
	cmd.AddCommand(benchRelayCmd(), benchSummarizeCmd())
	rootCmd.AddCommand(cmd)
}

func benchModeCmd(mode string) *cobra.Command {
	var (
		cfg       bench.Config
		connectTo []string
		pids      []string
		jsonOut   string
		quiet     bool
	)
	short := map[string]string{
		bench.ModeLatency:    "Ping-pong on one connection: round-trip percentiles",
		bench.ModeThroughput: "Ping-pong on many connections: messages per second",
		bench.ModeStream:     "Several large messages in flight per connection: MB/s",
		bench.ModeUpgrade:    "Open, upgrade and close WebSockets: upgrades per second",
		bench.ModeIdle:       "Hold many idle WebSockets: proxies' memory per connection",
	}[mode]
	c := &cobra.Command{
		Use:   mode + " URL",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ct, err := bench.ParseConnectTo(connectTo)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			cfg.Target, err = bench.ParseTarget(args[0], ct)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			if cfg.Procs, err = bench.ParseProcs(pids); err != nil {
				return &exitError{code: 2, err: err}
			}
			cfg.Mode = mode
			if !quiet {
				cfg.Progress = cmd.ErrOrStderr()
				cfg.ProgressTTY = wsclient.IsTerminal(os.Stderr)
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
			defer stop()
			res, err := bench.Run(ctx, cfg)
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			table := cmd.OutOrStdout()
			if jsonOut != "" {
				b, _ := json.MarshalIndent(res, "", "  ")
				b = append(b, '\n')
				if jsonOut == "-" {
					table = cmd.ErrOrStderr()
					if _, err := cmd.OutOrStdout().Write(b); err != nil {
						return err
					}
				} else if err := os.WriteFile(jsonOut, b, 0o644); err != nil {
					return &exitError{code: 1, err: err}
				}
			}
			return bench.WriteText(table, res)
		},
	}
	f := c.Flags()
	f.DurationVar(&cfg.Duration, "duration", 10*time.Second, "measured window (idle: how long the connections are held)")
	f.DurationVar(&cfg.Warmup, "warmup", time.Second, "traffic before the window starts (idle: settle time after opening)")
	f.IntVar(&cfg.Conns, "conns", 0, "connections (upgrade: concurrent workers; default per mode)")
	f.IntVar(&cfg.Size, "size", 0, "message payload in bytes (default per mode)")
	f.IntVar(&cfg.InFlight, "in-flight", 0, "stream: messages in flight per connection (default 8)")
	f.StringArrayVar(&connectTo, "connect-to", nil, "connect to ADDR:PORT whenever the URL names HOST:PORT, as HOST:PORT=ADDR:PORT (repeatable)")
	f.StringArrayVar(&pids, "pids", nil, "processes to sample, PID or LABEL=PID (repeatable or comma-separated)")
	f.StringVar(&jsonOut, "json", "", "write the JSON report to this file (- for standard output; the table then goes to standard error)")
	f.StringVar(&cfg.Label, "label", "", "target name recorded in the report")
	f.IntVar(&cfg.Round, "round", 0, "round number recorded in the report")
	f.BoolVarP(&quiet, "quiet", "q", false, "no progress line on standard error")
	return c
}

func benchRelayCmd() *cobra.Command {
	var (
		listen, upstream string
		buffered         bool
	)
	c := &cobra.Command{
		Use:   "relay",
		Short: "Baseline TCP relay (io.Copy both ways) for comparisons",
		Long: `Accept TCP connections on --listen and relay each to --upstream with io.Copy
in both directions (splice(2) on Linux; --buffered copies through a 32 KiB
buffer). No HTTP, no logging: the floor any one-hop proxy is measured
against. Stops on SIGTERM or SIGINT.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
			defer stop()
			fmt.Fprintf(cmd.ErrOrStderr(), "relay %s -> %s (buffered %v)\n", ln.Addr(), upstream, buffered)
			r := &bench.Relay{Upstream: upstream, Buffered: buffered}
			return r.Serve(ctx, ln)
		},
	}
	c.Flags().StringVar(&listen, "listen", "127.0.0.1:21900", "address to listen on")
	c.Flags().StringVar(&upstream, "upstream", "127.0.0.1:21000", "address to relay to")
	c.Flags().BoolVar(&buffered, "buffered", false, "copy through a user-space buffer instead of splice(2)")
	return c
}

func benchSummarizeCmd() *cobra.Command {
	var order string
	c := &cobra.Command{
		Use:   "summarize DIR",
		Short: "Summarize the JSON reports of bench/compare.sh as Markdown tables",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			results, err := bench.LoadResults(args[0])
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			if len(results) == 0 {
				return &exitError{code: 1, err: fmt.Errorf("no *.json reports in %s", args[0])}
			}
			var names []string
			if order != "" {
				names = strings.Split(order, ",")
			}
			bench.Summarize(cmd.OutOrStdout(), results, names, bench.DefaultPairs)
			return nil
		},
	}
	c.Flags().StringVar(&order, "order", "", "comma-separated target order for the tables")
	return c
}
