// The official CometD JavaScript client (npm `cometd`, run in Node by `cometd-nodejs-client`) used as GWS
// 8.5 applications use it: long-polling only, the session cookie of a Basic login on /api/v2/me riding
// along (or credentials in the handshake's ext), channels subscribed again at every successful handshake.
//
// Driven by JSON commands on standard input, one a line; reports what it sees as JSON lines on standard
// output. The same harness runs against callgate and against `cometd-nodejs-server` (oracle.mjs), which
// shows that the harness itself speaks Bayeux as the reference server expects.
//
// Commands:
//   {"cmd":"login","url":".../api/v2/me","user":"u","password":"p"}   -> {"event":"login","status":200,...}
//   {"cmd":"start","url":".../api/v2/notifications","transport":"long-polling","ack":true,
//    "channels":["/v2/me/*"],"ext":{...}}                               -> {"event":"handshake",...}
//   {"cmd":"subscribe","channels":["/a","/b"]}  (in one batch: one request)  -> {"event":"subscribed",...}
//   {"cmd":"stop"}                                                      -> {"event":"stopped"}
// Every message received: {"event":"message","channel":...,"data":...}.

import { adapt } from "cometd-nodejs-client";
import { AckExtension, CometD } from "cometd";
import readline from "node:readline";

adapt();

const out = (event) => process.stdout.write(JSON.stringify(event) + "\n");

let cookie = null;
let cometd = null;
let channels = [];

function subscribeAll(list) {
    cometd.batch(() => {
        for (const channel of list) {
            cometd.subscribe(
                channel,
                (message) => out({ event: "message", channel: message.channel, data: message.data }),
                (reply) => out({
                    event: "subscribed",
                    channel,
                    successful: reply.successful,
                    error: reply.error ?? null,
                }),
            );
        }
    });
}

async function login(command) {
    const basic = Buffer.from(`${command.user}:${command.password}`).toString("base64");
    const response = await fetch(command.url, { headers: { Authorization: `Basic ${basic}` } });
    const setCookie = response.headers.get("set-cookie");
    if (setCookie) {
        cookie = setCookie.split(";")[0];
    }
    const body = await response.json().catch(() => null);
    out({ event: "login", status: response.status, user: body?.user?.userName ?? null, cookie: cookie !== null });
}

function start(command) {
    cometd = new CometD();
    if (command.transport === "long-polling") {
        cometd.unregisterTransport("websocket");
        cometd.unregisterTransport("callback-polling");
    }
    if (command.ack) {
        cometd.registerExtension("ack", new AckExtension());
    }
    channels = command.channels ?? [];
    cometd.configure({
        url: command.url,
        logLevel: process.env.COMETD_LOG ?? "warn",
        requestHeaders: cookie ? { Cookie: cookie } : {},
    });
    cometd.addListener("/meta/handshake", (message) => {
        out({
            event: "handshake",
            successful: message.successful,
            error: message.error ?? null,
            ack: message.ext?.ack ?? null,
            clientId: message.clientId ?? null,
            transport: cometd.getTransport()?.type ?? null,
        });
        if (message.successful && channels.length > 0) {
            subscribeAll(channels);
        }
    });
    cometd.addListener("/meta/connect", (message) => {
        if (!message.successful) {
            out({ event: "connect", successful: false, error: message.error ?? null });
        }
    });
    cometd.handshake(command.ext ? { ext: command.ext } : {});
}

function stop() {
    if (!cometd) {
        out({ event: "stopped" });
        return;
    }
    cometd.disconnect(() => {
        out({ event: "stopped" });
        process.exit(0);
    });
    // A server gone already: stop anyway.
    setTimeout(() => process.exit(0), 2000);
}

const input = readline.createInterface({ input: process.stdin });
input.on("line", async (line) => {
    if (!line.trim()) {
        return;
    }
    const command = JSON.parse(line);
    try {
        switch (command.cmd) {
            case "login":
                await login(command);
                break;
            case "start":
                start(command);
                break;
            case "subscribe":
                subscribeAll(command.channels);
                break;
            case "stop":
                stop();
                break;
            default:
                out({ event: "error", message: `unknown command ${command.cmd}` });
        }
    } catch (error) {
        out({ event: "error", message: String(error) });
    }
});
input.on("close", () => stop());
