// The reference CometD server (`cometd-nodejs-server`, with its ack extension) on a free loopback port: the
// oracle the harness is checked against. Prints {"url":"http://127.0.0.1:PORT/cometd"} once listening, then
// takes commands on standard input, one JSON object a line:
//   {"cmd":"publish","channel":"/v2/me/calls","data":{...}}  -> {"event":"published","channel":...}

import http from "node:http";
import readline from "node:readline";
import server from "cometd-nodejs-server";
import acks from "cometd-nodejs-server/ack-extension.js";

const out = (event) => process.stdout.write(JSON.stringify(event) + "\n");

const cometd = server.createCometDServer({ logLevel: "warn" });
cometd.addExtension(new acks.AcknowledgedMessagesExtension());
const httpServer = http.createServer(cometd.handle);
httpServer.listen(0, "127.0.0.1", () => {
    out({ url: `http://127.0.0.1:${httpServer.address().port}/cometd` });
});

const input = readline.createInterface({ input: process.stdin });
input.on("line", (line) => {
    if (!line.trim()) {
        return;
    }
    const command = JSON.parse(line);
    if (command.cmd === "publish") {
        const channel = cometd.createServerChannel(command.channel);
        channel.publish(null, command.data, () => out({ event: "published", channel: command.channel }));
    }
});
input.on("close", () => process.exit(0));
