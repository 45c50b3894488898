// Package windows is porttrace's Windows source.
package windows
