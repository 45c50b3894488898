package main

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/linux"
	"github.com/porttrace/porttrace/tracer/snapshot"
)

func openSource(cfg tracer.Config) (tracer.Source, error) {
	return linux.Open(cfg)
}

func snapshotPort(port uint16) (*snapshot.PortReport, error) {
	return linux.Who(port)
}

// processName is the command name of process pid, or why there is no such
// process: sockets belong to processes, so a thread's id names none.
func processName(pid uint32) (string, error) {
	f, err := os.Open("/proc/" + strconv.FormatUint(uint64(pid), 10) + "/status")
	if errors.Is(err, fs.ErrNotExist) {
		return "", errors.New("no such process")
	}
	if err != nil {
		return "", err
	}
	defer f.Close()
	var name, tgid string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, value, _ := strings.Cut(sc.Text(), ":")
		switch key {
		case "Name":
			name = strings.TrimSpace(value)
		case "Tgid":
			tgid = strings.TrimSpace(value)
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	if tgid != strconv.FormatUint(uint64(pid), 10) {
		return "", fmt.Errorf("a thread of process %s: give the process", tgid)
	}
	return name, nil
}

// readerGone says that a write failed because the reader of a pipe has
// gone (porttrace | head).
func readerGone(err error) bool {
	return errors.Is(err, syscall.EPIPE)
}
