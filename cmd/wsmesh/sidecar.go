package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/wsmesh/wsmesh/internal/accesslog"
	"github.com/wsmesh/wsmesh/internal/discovery"
	"github.com/wsmesh/wsmesh/internal/h1"
	"github.com/wsmesh/wsmesh/internal/relay"
	"github.com/wsmesh/wsmesh/internal/sidecar"
)

func init() {
	var (
		configs    []string
		workload   string
		admin      string
		accessLog  string
		logLevel   string
		observe    bool
		wsIdle     time.Duration
		parkAfter  time.Duration
		headerRead time.Duration
		idle       time.Duration
		h2Strict   bool
		maxHeadKB  int
		drainGrace time.Duration
		maxConns   int
		maxStreams int
		intercept  bool
		outPort    int
		inPort     int
		discoMode  string
		kubeconfig string
		kubeCtx    string
		kubeNS     []string
		gcPercent  int
	)
	cmd := &cobra.Command{
		Use:   "sidecar --config DIR_OR_FILE --workload NAME",
		Short: "Run the sidecar proxy of one workload",
		Long: `Run the sidecar proxy of one workload.

The configuration is the YAML users already write for Kubernetes and Istio
(Service, ServiceEntry, WorkloadEntry, EndpointSlice, Pod, Deployment, Sidecar,
DestinationRule, EnvoyFilter, the istio ConfigMap), as files or directories.
Files are watched: a valid change applies without cutting open connections;
an invalid one is logged and the previous configuration stays in force.
One JSON access-log line per request or WebSocket goes to --access-log.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if workload == "" {
				return fmt.Errorf("--workload is required")
			}
			switch discoMode {
			case "file":
				if len(configs) == 0 {
					return fmt.Errorf("--config is required (or --discovery kubernetes)")
				}
			case "kubernetes":
				if len(configs) > 0 {
					return fmt.Errorf("--config cannot be used with --discovery kubernetes")
				}
			default:
				return fmt.Errorf("--discovery: want file or kubernetes, got %q", discoMode)
			}
			if err := setGCPercent(cmd, gcPercent); err != nil {
				return err
			}
			logger := newLogger(logLevel)
			access, err := accesslog.Open(accessLog)
			if err != nil {
				return fmt.Errorf("access log: %w", err)
			}
			defer access.Close()
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			var src discovery.Source
			if discoMode == "kubernetes" {
				ks, err := discovery.NewKubeSource(discovery.KubeConfig{
					Kubeconfig: kubeconfig, Context: kubeCtx, Namespaces: kubeNS,
				}, logger)
				if err != nil {
					return err
				}
				defer ks.Close() // when sidecar.New fails before Run; idempotent
				src = ks
			} else {
				fs, err := discovery.NewFileSource(configs, logger)
				if err != nil {
					return err
				}
				src = fs
			}
			for _, w := range src.Current().Warnings {
				logger.Warn("configuration", "warning", w)
			}
			sc, err := sidecar.New(sidecar.Options{
				Source:               src,
				Workload:             workload,
				AdminAddr:            admin,
				Access:               access,
				Logger:               logger,
				ObserveWebSocket:     observe,
				WebSocketIdleTimeout: wsIdle,
				WebSocketParkAfter:   parkAfter,
				HeaderReadTimeout:    headerRead,
				IdleTimeout:          idle,
				H2Strict:             h2Strict,
				DrainGrace:           drainGrace,
				MaxConnections:       maxConns,
				MaxConcurrentStreams: maxStreams,
				Intercept:            intercept,
				OutboundPort:         outPort,
				InboundPort:          inPort,
				Limits:               h1.Limits{MaxHeadBytes: maxHeadKB << 10},
			})
			if err != nil {
				return err
			}
			srcDone := make(chan error, 1)
			go func() { srcDone <- src.Run(ctx) }()
			err = sc.Run(ctx)
			stop()
			<-srcDone
			return err
		},
	}
	f := cmd.Flags()
	f.StringArrayVarP(&configs, "config", "c", nil, "configuration file or directory (repeatable)")
	f.StringVar(&discoMode, "discovery", "file", "where the configuration comes from: file (--config) or kubernetes (the API server)")
	f.StringVar(&kubeconfig, "kubeconfig", "", "with --discovery kubernetes: kubeconfig file (default: in-cluster service account, else $KUBECONFIG or ~/.kube/config)")
	f.StringVar(&kubeCtx, "kube-context", "", "with --discovery kubernetes: kubeconfig context (default: its current one)")
	f.StringSliceVar(&kubeNS, "kube-namespace", nil, "with --discovery kubernetes: watch only these namespaces (repeatable; default: all; include istio-system for mesh-wide resources)")
	f.StringVarP(&workload, "workload", "w", "", "workload this sidecar serves: a WorkloadEntry, Pod or Deployment name (or namespace/name)")
	f.StringVar(&admin, "admin", "127.0.0.1:15000", "admin listener address (\"\" disables)")
	f.StringVar(&accessLog, "access-log", "-", "access-log file (- for standard output)")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	f.BoolVar(&observe, "observe-websocket", true, "observe WebSocket frame headers for the access log")
	f.DurationVar(&wsIdle, "websocket-idle-timeout", 0, "close a WebSocket idle this long (0: never)")
	f.DurationVar(&parkAfter, "websocket-park-after", relay.DefaultParkAfter, "a WebSocket quiet this long waits for bytes without a goroutine (negative: never)")
	f.DurationVar(&headerRead, "header-read-timeout", 10*time.Second, "time allowed to receive a request head")
	f.DurationVar(&idle, "idle-timeout", time.Hour, "close an idle keep-alive HTTP connection after this long")
	f.BoolVar(&h2Strict, "h2-strict", false, "answer 503 instead of falling back to HTTP/1.1 when a peer does not allow extended CONNECT")
	f.DurationVar(&drainGrace, "drain-grace", 5*time.Second, "on SIGTERM or POST /drain: how long open WebSockets may go on before they get close 1001 (Going Away)")
	f.BoolVar(&intercept, "intercept", false, "serve connections redirected by iptables (wsmesh init-iptables) on --outbound-port and --inbound-port, routed by original destination")
	f.IntVar(&outPort, "outbound-port", 15001, "with --intercept: where the app's redirected outbound connections arrive")
	f.IntVar(&inPort, "inbound-port", 15006, "with --intercept: where peers' redirected inbound connections arrive")
	f.IntVar(&maxStreams, "max-concurrent-streams", 1000, "most streams (WebSockets, requests) a peer may open on one inbound HTTP/2 connection; REFUSED_STREAM beyond")
	f.IntVar(&maxConns, "max-connections", 0, "most downstream HTTP/1.1 connections served at once (0: unlimited); beyond it new ones get 503 with flag OM")
	f.IntVar(&maxHeadKB, "max-request-headers-kb", 60, "largest request head accepted, in KiB (431 beyond)")
	f.IntVar(&gcPercent, "gc-percent", defaultGCPercent, "garbage-collection target, as GOGC: the heap may grow this many percent over live data before a collection; lower keeps idle WebSockets' memory down at some CPU per handshake (the GOGC environment variable wins when set and this flag is not)")
	rootCmd.AddCommand(cmd)
}

// defaultGCPercent is the sidecar's GOGC. The data path allocates nothing
// per message, so collections come from handshakes; a collection every 50 %
// of growth instead of Go's 100 % leaves fewer freed handshake objects
// scattered between the long-lived ones of idle WebSockets (see
// docs/performance.md).
const defaultGCPercent = 50

// setGCPercent applies --gc-percent, unless GOGC is set and the flag is not.
func setGCPercent(cmd *cobra.Command, pct int) error {
	if pct < 1 {
		return fmt.Errorf("--gc-percent: want at least 1, got %d", pct)
	}
	if _, env := os.LookupEnv("GOGC"); env && !cmd.Flags().Changed("gc-percent") {
		return nil
	}
	debug.SetGCPercent(pct)
	return nil
}

func newLogger(level string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
}
