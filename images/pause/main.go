// The node's pod sandbox ("pause") process: it holds a Pod's namespaces open, reaps orphaned
// children (it is PID 1 of the Pod when the PID namespace is shared) and exits 0 on SIGINT or
// SIGTERM. Built as a static binary into localhost/agenttask-pause by `agenttask images build`.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig == syscall.SIGCHLD {
			for {
				var status syscall.WaitStatus
				pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
			continue
		}
		os.Exit(0)
	}
}
