/**
 * The refund example as an app for the `eart` command line:
 *   EART_DEMO_FILE=.eart/refund-demo.sqlite eart --app dist/examples/refund/app.js pending
 */
import { resolve } from "node:path";
import { defineApp } from "eart/graphs";
import { openRefundAgent } from "./agent.js";

export default async function refundApp() {
  const { agent, auditLog, close } = await openRefundAgent(resolve(process.env.EART_DEMO_FILE ?? ".eart/refund-demo.sqlite"));
  return defineApp({ auditLog, graphs: { "support-agent": agent }, close });
}
