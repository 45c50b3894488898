package proc

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Descendants lists the processes below root, each before its children:
// the order in which to stop a tree (free --tree, taskkill /T), parents
// first, so that no parent replaces a child stopped before it. The list is
// a moment's view: processes forked after it are not in it, and each is an
// Identity, so that Stop leaves alone any pid that changes hands since.
func Descendants(root Identity) ([]Identity, error) {
	now, err := Identify(root.PID)
	if err != nil {
		return nil, err
	}
	if !now.Same(root) {
		return nil, fmt.Errorf("pid %d: %w", root.PID, ErrExited)
	}
	children := childrenOf
	if _, err := os.Stat(taskChildrenPath(root.PID, root.PID)); err != nil {
		// No /proc/PID/task/TID/children (a kernel built without
		// CONFIG_PROC_CHILDREN): every process's parent, from one scan.
		children = childrenByParent()
	}
	var out []Identity
	seen := map[uint32]bool{root.PID: true}
	var visit func(pid uint32)
	visit = func(pid uint32) {
		for _, child := range children(pid) {
			if seen[child] {
				continue
			}
			seen[child] = true
			if id, err := Identify(child); err == nil { // else exited meanwhile
				out = append(out, id)
				visit(child)
			}
		}
	}
	visit(root.PID)
	return out, nil
}

// Parent is the process that id's parent pid names now: the one that
// forked it, or the reaper it was handed to when that one exited (init, a
// subreaper). ErrExited where id no longer runs. One read of
// /proc/PID/stat and one of the parent's.
func Parent(id Identity) (Identity, error) {
	st, err := readStat(id.PID)
	if err != nil {
		return Identity{}, err
	}
	if id.StartNs != 0 && !id.Same(Identity{PID: id.PID, StartNs: st.startNs()}) {
		return Identity{}, fmt.Errorf("pid %d: %w", id.PID, ErrExited)
	}
	return Identify(st.ppid)
}

func taskChildrenPath(pid, tid uint32) string {
	return "/proc/" + strconv.FormatUint(uint64(pid), 10) + "/task/" + strconv.FormatUint(uint64(tid), 10) + "/children"
}

// childrenOf lists pid's children from /proc/PID/task/*/children: a child's
// parent is the thread that forked it, so every thread has a list.
func childrenOf(pid uint32) []uint32 {
	tasks, err := os.ReadDir("/proc/" + strconv.FormatUint(uint64(pid), 10) + "/task")
	if err != nil {
		return nil
	}
	var out []uint32
	for _, t := range tasks {
		tid, err := strconv.ParseUint(t.Name(), 10, 32)
		if err != nil {
			continue
		}
		b, err := os.ReadFile(taskChildrenPath(pid, uint32(tid)))
		if err != nil {
			continue
		}
		out = append(out, parsePIDs(string(b))...)
	}
	return out
}

// childrenByParent reads every process's parent from /proc/*/stat once.
func childrenByParent() func(uint32) []uint32 {
	byParent := map[uint32][]uint32{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.ParseUint(e.Name(), 10, 32)
		if err != nil {
			continue
		}
		if st, err := readStat(uint32(pid)); err == nil {
			byParent[st.ppid] = append(byParent[st.ppid], uint32(pid))
		}
	}
	return func(pid uint32) []uint32 { return byParent[pid] }
}

// parsePIDs reads a children file: pids separated by spaces.
func parsePIDs(s string) []uint32 {
	var out []uint32
	for f := range strings.FieldsSeq(s) {
		if pid, err := strconv.ParseUint(f, 10, 32); err == nil {
			out = append(out, uint32(pid))
		}
	}
	return out
}
