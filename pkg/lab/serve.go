package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
)

// ServeReadyLine is what Serve prints once every port listens.
const ServeReadyLine = "tortie lab serve: listening"

// Serve is the workload's built-in server (`tortie lab serve`): on every
// "tcp:PORT" it accepts and echoes what it reads until the peer closes; on
// every "udp:PORT" it echoes each datagram. Both on all addresses of the
// namespace it runs in, IPv4 and IPv6. It returns when ctx ends.
func Serve(ctx context.Context, listen []string, out io.Writer) error {
	specs, err := ParseListen(listen)
	if err != nil {
		return err
	}
	if len(specs) == 0 {
		return errors.New("nothing to listen on")
	}
	log := slog.New(slog.NewTextHandler(out, nil))
	var closers []io.Closer
	var wg sync.WaitGroup
	for _, s := range specs {
		proto, port, _ := strings.Cut(s, ":")
		addr := ":" + port
		switch proto {
		case "tcp":
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return err
			}
			closers = append(closers, ln)
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					go func() {
						defer c.Close()
						_, _ = io.Copy(c, c)
					}()
				}
			}()
		case "udp":
			pc, err := net.ListenPacket("udp", addr)
			if err != nil {
				return err
			}
			closers = append(closers, pc)
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, 65536)
				for {
					n, from, err := pc.ReadFrom(buf)
					if err != nil {
						return
					}
					if _, err := pc.WriteTo(buf[:n], from); err != nil {
						log.Warn("udp echo", "to", from, "err", err)
					}
				}
			}()
		}
	}
	fmt.Fprintf(out, "%s on %s\n", ServeReadyLine, strings.Join(specs, ","))
	<-ctx.Done()
	for _, c := range closers {
		c.Close()
	}
	wg.Wait()
	return nil
}
