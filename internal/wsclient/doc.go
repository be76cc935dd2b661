// Package wsclient is the interactive WebSocket client wsmesh runs as the
// guide's client workload (wsmesh client URL). It behaves and prints like
// "python3 -m websockets URL" from websockets 10.4:
//
//	Connected to ws://127.0.0.1:8080.
//	> hello
//	< hello
//	> world
//	< world
//	Connection closed: 1000 (OK).
//
// Every line read from the input is sent as one message (text, or binary
// with Options.Binary); every message received is printed as "< text" or
// "< (binary) 0a1b..." (lowercase hex); when the input ends the client closes
// with 1000 and prints the close code and reason the server answered with,
// worded as websockets 10.4 words them (see FormatClose).
//
// Two modes exist, chosen by Options.Interactive (the command sets it when
// standard input is a terminal):
//
//   - Interactive: a "> " prompt is shown for each line, received messages
//     are inserted above the prompt line with the same VT100 sequences the
//     Python client uses, and end of input (Ctrl-D) closes at once.
//   - Non-interactive (pipe or file): no prompts and no escape sequences are
//     written, so standard output holds only the connection lines and the
//     received messages, one per line: a readable, diffable transcript. The
//     sent lines are not repeated (the input already holds them). After the
//     input ends the client waits until as many messages have been received
//     as lines were sent, or Options.Wait passes, then closes with 1000.
package wsclient
