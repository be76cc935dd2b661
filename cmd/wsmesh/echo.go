package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/wsmesh/wsmesh/internal/echo"
)

func init() {
	var (
		listen          string
		subprotocols    []string
		maxMessageSize  int64
		noCompression   bool
		shutdownTimeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "echo",
		Short: "Run the WebSocket echo server (the guide's websockets-server)",
		Long: `Run an RFC 6455 WebSocket echo server: every text or binary message is sent
back unchanged. GET ` + echo.HealthPath + ` answers 200 for probes; any other path is the
WebSocket endpoint. On SIGTERM or SIGINT every open connection is closed with
1001 (Going Away) before the process exits. Logs go to standard error.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
			srv := echo.New(echo.Config{
				Subprotocols:       subprotocols,
				MaxMessageSize:     maxMessageSize,
				DisableCompression: noCompression,
				Logger:             logger,
			})
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
			defer stop()

			served := make(chan error, 1)
			go func() { served <- srv.Serve(ln) }()
			logger.Info("echo server listening", "addr", ln.Addr().String(), "subprotocols", subprotocols,
				"max_message_size", maxMessageSize, "compression", !noCompression)

			select {
			case err := <-served:
				return &exitError{code: 1, err: fmt.Errorf("serving %s: %w", ln.Addr(), err)}
			case <-ctx.Done():
			}
			stop()
			logger.Info("signal received: shutting down", "timeout", shutdownTimeout)
			sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
			defer cancel()
			err = srv.Shutdown(sctx)
			if serr := <-served; !errors.Is(serr, http.ErrServerClosed) && err == nil {
				err = serr
			}
			if err != nil {
				return &exitError{code: 1, err: fmt.Errorf("shutdown: %w", err)}
			}
			logger.Info("echo server stopped")
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", ":80", "address to listen on (host:port)")
	f.StringArrayVar(&subprotocols, "subprotocol", nil, "supported subprotocol (repeatable); the first one the client offers is selected")
	f.Int64Var(&maxMessageSize, "max-message-size", echo.DefaultMaxMessageSize, "largest message in bytes; larger ones close the connection with 1009 (negative: no limit)")
	f.BoolVar(&noCompression, "no-compression", false, "do not negotiate permessage-deflate")
	f.DurationVar(&shutdownTimeout, "shutdown-timeout", 10*time.Second, "how long to wait for close handshakes on SIGTERM/SIGINT")
	rootCmd.AddCommand(cmd)
}
