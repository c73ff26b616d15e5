// The demo chat with users (issue 11): demo tokens, who is online, and a
// direct message that reaches only its recipient — three pages as alice,
// bob and carol on a server with an auth secret, demo tokens and
// docs/examples/demo-auth.toml (namespace `chat`: users only, presence,
// join/leave).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { startServer, launch } from "./harness.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const CONFIG = join(root, "docs", "examples", "demo-auth.toml");
const SECRET = "browser-test-secret-0123456789abcdef";
const ARTIFACTS = join(root, "target", "browser-artifacts");

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

/** The payload of a JWT, unverified. */
function payload(token) {
  return JSON.parse(Buffer.from(token.split(".")[1], "base64url").toString("utf8"));
}

test("demo tokens: /demo/token mints a chat token; the page offers sign-in only when tokens are on", async () => {
  const withTokens = await startServer({ args: ["--auth-secret", SECRET, "--demo-tokens"] });
  const without = await startServer();
  try {
    const res = await fetch(`${withTokens.url}/demo/token?user=alice`);
    assert.equal(res.status, 200);
    const claims = payload((await res.json()).token);
    assert.equal(claims.sub, "alice");
    assert.deepEqual(claims.channels, ["chat:*", "#alice"]);
    assert.deepEqual(claims.publish, ["chat:*"]);
    assert.equal(claims.send, true);
    assert.ok(claims.exp - claims.iat === 3600, "one hour");
    const bad = await fetch(`${withTokens.url}/demo/token?user=${encodeURIComponent("not ok!")}`);
    assert.equal(bad.status, 400);
    assert.equal((await bad.json()).code, "bad_request");
    assert.equal((await fetch(`${without.url}/demo/token?user=alice`)).status, 404);

    const page = await browser.newPage();
    await page.goto(withTokens.url + "/");
    await page.waitForFunction(() => window.pushgateUsers === true);
    assert.equal(await page.isVisible("#signin"), true);
    assert.equal(await page.isVisible("#users-hint"), false);
    await page.goto(without.url + "/");
    await page.waitForFunction(() => window.pushgateUsers === false && window.pushgateChat?.state === "connected");
    assert.equal(await page.isVisible("#signin"), false);
    assert.match(await page.textContent("#users-hint"), /--demo-tokens/);
    await page.close();
  } finally {
    await withTokens.stop();
    await without.stop();
  }
});

test("demo chat with users: alice and bob see each other online; a direct message reaches only bob", async () => {
  const server = await startServer({ args: ["--config", CONFIG, "--auth-secret", SECRET, "--demo-tokens"] });
  const pages = {};
  try {
    for (const name of ["alice", "bob", "carol"]) {
      const page = await browser.newPage();
      page.on("pageerror", (e) => console.error(`${name} page error:`, e));
      await page.goto(server.url + "/");
      await page.waitForSelector("#signin:not([hidden])");
      await page.fill("#user", name);
      await page.click("#signin button");
      await page.waitForFunction(() => window.pushgateChat?.state === "connected" && window.pushgateChat.user);
      pages[name] = page;
    }
    const online = (page) => page.$$eval("#who li[data-user]", (lis) => lis.map((li) => li.dataset.user));
    // Everyone shows everyone: the later ones from presence, the earlier ones through join.
    for (const [name, page] of Object.entries(pages)) {
      await page.waitForFunction(
        () => ["alice", "bob", "carol"].every((u) => document.querySelector(`#who li[data-user="${u}"]`)),
        null, { timeout: 15_000 },
      ).catch(async (e) => { throw new Error(`${name} shows ${await online(page)}: ${e.message}`); });
    }
    assert.deepEqual((await online(pages.alice)).sort(), ["alice", "bob", "carol"]);
    assert.deepEqual((await online(pages.bob)).sort(), ["alice", "bob", "carol"]);

    const direct = (page, text) => page.waitForFunction(
      (text) => [...document.querySelectorAll("#log li.direct")].some((li) => li.textContent.includes(text)),
      text, { timeout: 15_000 },
    );
    // alice → bob, privately.
    await pages.alice.selectOption("#dm-to", "bob");
    await pages.alice.fill("#dm-text", "for bob only");
    await pages.alice.click("#dm button");
    await direct(pages.bob, "for bob only");
    const toBob = await pages.bob.$eval("#log li.direct:last-child", (li) => li.textContent);
    assert.match(toBob, /alice → you/);
    // Barrier: alice → carol, sent after; once it is on carol's page, the
    // message for bob would have arrived before it, had it leaked.
    await pages.alice.selectOption("#dm-to", "carol");
    await pages.alice.fill("#dm-text", "for carol");
    await pages.alice.click("#dm button");
    await direct(pages.carol, "for carol");
    const carolSees = await pages.carol.$eval("#log", (ul) => ul.textContent);
    assert.ok(!carolSees.includes("for bob only"), `carol must not see bob's message: ${carolSees}`);
    const bobSees = await pages.bob.$eval("#log", (ul) => ul.textContent);
    assert.ok(!bobSees.includes("for carol"), "bob must not see carol's message");
    mkdirSync(ARTIFACTS, { recursive: true });
    await pages.bob.screenshot({ path: join(ARTIFACTS, "demo-users.png"), fullPage: true });

    // bob leaves: alice sees him go.
    await pages.bob.close();
    delete pages.bob;
    await pages.alice.waitForFunction(() => !document.querySelector('#who li[data-user="bob"]'), null, { timeout: 15_000 });
  } finally {
    for (const page of Object.values(pages)) await page.close();
    await server.stop();
  }
});
