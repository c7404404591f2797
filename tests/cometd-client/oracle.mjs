// The reference CometD server (`cometd-nodejs-server`, with its ack extension) on a free loopback port: the
// oracle the harness is checked against. Prints {"url":"http://127.0.0.1:PORT/cometd"} once listening, then
// takes commands on standard input, one JSON object a line:
//   {"cmd":"publish","channel":"/v2/me/calls","data":{...}}  -> {"event":"published","channel":...}
//   {"cmd":"paced","channel":...,"data":[...],"rate":N}      -> publishes each at N a second, its
//     `extensions.SentAt` stamped with the wall clock in microseconds as it goes (the benchmarks' latency)
//   {"cmd":"burst","channel":...,"data":[...]}               -> publishes all at once

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
    const channel = cometd.createServerChannel(command.channel);
    if (command.cmd === "publish") {
        channel.publish(null, command.data, () => out({ event: "published", channel: command.channel }));
    } else if (command.cmd === "burst") {
        for (const data of command.data) {
            channel.publish(null, data);
        }
        out({ event: "published", count: command.data.length });
    } else if (command.cmd === "paced") {
        const started = performance.now();
        let next = 0;
        const tick = () => {
            const due = Math.floor(((performance.now() - started) * command.rate) / 1000);
            while (next < command.data.length && next <= due) {
                const data = command.data[next++];
                data.extensions = { SentAt: Math.round((performance.timeOrigin + performance.now()) * 1000) };
                channel.publish(null, data);
            }
            if (next < command.data.length) {
                setTimeout(tick, 1);
            } else {
                out({ event: "published", count: command.data.length });
            }
        };
        tick();
    }
});
input.on("close", () => process.exit(0));
