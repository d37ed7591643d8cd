/**
 * The LangGraph server's custom app (`langgraph.json` → `http.app`): eart's middleware, so a
 * reviewer's `threads.search({ status: "interrupted" })` lists the threads waiting for them and no
 * others (eart's auth lists a reviewer's own threads only to a search that does not pass through it).
 */
import { Hono } from "hono";
import { createEartHttpMiddleware } from "eart/server";

export const app = new Hono().use(createEartHttpMiddleware());
