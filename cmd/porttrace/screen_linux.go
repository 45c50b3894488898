package main

import (
	"io"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"
)

// Escape sequences of the alternate screen (the operator's scrollback is
// left as it was) and of the cursor.
const (
	enterScreen = "\x1b[?1049h\x1b[?25l"
	leaveScreen = "\x1b[?25h\x1b[?1049l"
)

// openScreen puts the terminal in top's mode when both standard input and
// output are one, and returns nil otherwise: the output is then plain.
// Only line editing and echo are turned off: Ctrl-C and Ctrl-Z still
// signal, and the signal's end of porttrace restores the terminal.
func openScreen(stdin *os.File, stdout io.Writer) (*screen, error) {
	out, ok := stdout.(*os.File)
	if !ok || os.Getenv("TERM") == "dumb" {
		return nil, nil
	}
	inFd, outFd := int(stdin.Fd()), int(out.Fd())
	saved, err := unix.IoctlGetTermios(inFd, unix.TCGETS)
	if err != nil {
		return nil, nil
	}
	if _, err := unix.IoctlGetTermios(outFd, unix.TCGETS); err != nil {
		return nil, nil
	}
	mode := *saved
	mode.Lflag &^= unix.ICANON | unix.ECHO
	mode.Cc[unix.VMIN], mode.Cc[unix.VTIME] = 1, 0
	if err := unix.IoctlSetTermios(inFd, unix.TCSETS, &mode); err != nil {
		return nil, err
	}
	keys := make(chan byte, 16)
	go func() {
		var b [1]byte
		for {
			if n, err := stdin.Read(b[:]); n == 0 || err != nil {
				return
			}
			select {
			case keys <- b[0]:
			default: // keys faster than the screen: drop them
			}
		}
	}()
	resized := make(chan os.Signal, 1)
	signal.Notify(resized, syscall.SIGWINCH)
	out.WriteString(enterScreen)
	return &screen{
		out:     out,
		keys:    keys,
		resized: resized,
		size: func() (rows, cols int) {
			ws, err := unix.IoctlGetWinsize(outFd, unix.TIOCGWINSZ)
			if err != nil || ws.Row == 0 || ws.Col == 0 {
				return 24, 80
			}
			return int(ws.Row), int(ws.Col)
		},
		restore: func() {
			signal.Stop(resized)
			out.WriteString(leaveScreen)
			_ = unix.IoctlSetTermios(inFd, unix.TCSETS, saved)
		},
	}, nil
}
