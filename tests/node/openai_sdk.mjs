#!/usr/bin/env node
// The OpenAI surface of Orchard's serving (and of the platform gateway in front of it),
// driven through the official `openai` npm package as a Node user's code drives it.
//
//   node tests/node/openai_sdk.mjs --base-url http://127.0.0.1:8100/v1 [--api-key KEY]
//        [--model champion] [--embedding-model all-MiniLM-L6-v2] [--checks chat,tools,...]
//
// Each check prints one JSON line: {"check", "ok", "tokens", ...what it saw}, or
// {"check", "ok": false, "error"}; `tokens` is the usage of every answered request (what
// the gateway bills). The exit status is 1 when a check failed, 2 on bad arguments.
// `tests/integration/test_serving.py` runs it against serving and against the gateway.
// The SDK is ui/'s devDependency (`make install` runs `npm ci` there).

import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { parseArgs } from "node:util";

const require = createRequire(new URL("../../ui/package.json", import.meta.url));
let OpenAI;
try {
  OpenAI = require("openai");
} catch {
  console.error("error: the openai npm package is not installed in ui/: run `make install`");
  process.exit(2);
}

const HELLO = [{ role: "user", content: "Hello! Tell me about apples." }];

function tool(name, properties) {
  const parameters = {
    type: "object",
    properties,
    required: Object.keys(properties),
    additionalProperties: false,
  };
  return { type: "function", function: { name, parameters, strict: true } };
}

// Closed value sets and bounded numbers: even a random model's call ends within max_tokens.
const TOOLS = [
  tool("get_weather", { city: { enum: ["Paris", "Oslo", "Lima"] }, unit: { enum: ["C", "F"] } }),
  tool("set_alarm", {
    hour: { type: "integer", minimum: 0, maximum: 23 },
    loud: { type: "boolean" },
  }),
];

const FRUIT = {
  type: "object",
  properties: {
    fruit: { enum: ["apple", "pear", "plum"] },
    ripe: { type: "boolean" },
    count: { type: "integer", minimum: 0, maximum: 99 },
  },
  required: ["fruit", "ripe", "count"],
  additionalProperties: false,
};
const FRUIT_FORMAT = {
  type: "json_schema",
  json_schema: { name: "fruit", schema: FRUIT, strict: true },
};

// -- small checks of what the SDK hands back ----------------------------------------------
function checkFruit(value) {
  assert.deepEqual(Object.keys(value).sort(), ["count", "fruit", "ripe"], JSON.stringify(value));
  assert.ok(FRUIT.properties.fruit.enum.includes(value.fruit), value.fruit);
  assert.equal(typeof value.ripe, "boolean");
  assert.ok(Number.isInteger(value.count) && value.count >= 0 && value.count <= 99);
  return value;
}

function checkArguments(name, args) {
  const schema = TOOLS.find((t) => t.function.name === name)?.function.parameters;
  assert.ok(schema, `a call of an unknown tool ${name}`);
  assert.deepEqual(Object.keys(args).sort(), [...schema.required].sort());
  for (const [key, rule] of Object.entries(schema.properties)) {
    const value = args[key];
    if (rule.enum) assert.ok(rule.enum.includes(value), `${name}.${key} = ${value}`);
    if (rule.type === "integer") {
      assert.ok(Number.isInteger(value) && value >= rule.minimum && value <= rule.maximum);
    }
    if (rule.type === "boolean") assert.equal(typeof value, "boolean");
  }
}

/** A message's tool calls as [name, arguments], each checked against its tool's schema. */
function callsOf(message) {
  return (message.tool_calls ?? []).map((call) => {
    assert.equal(call.type, "function");
    assert.ok(call.id.startsWith("call_"), call.id);
    const args = JSON.parse(call.function.arguments);
    checkArguments(call.function.name, args);
    return [call.function.name, args];
  });
}

/** Each choice's text, tool calls and finish reason as a client assembles them from
 * the stream's chunks; the usage chunk last. */
async function collect(stream) {
  const choices = {};
  let usage = null;
  let chunks = 0;
  let toolDeltas = 0;
  let id = null;
  for await (const chunk of stream) {
    chunks += 1;
    id ??= chunk.id;
    assert.equal(chunk.id, id, "every chunk of a stream has its id");
    assert.equal(usage, null, "the usage chunk is the last");
    if (chunk.usage) {
      assert.deepEqual(chunk.choices, []);
      usage = chunk.usage;
    }
    for (const choice of chunk.choices) {
      const seen = (choices[choice.index] ??= {
        text: "",
        calls: {},
        finish: null,
        logprobs: [],
      });
      const delta = choice.delta ?? {};
      seen.text += delta.content ?? choice.text ?? "";
      for (const part of delta.tool_calls ?? []) {
        toolDeltas += 1;
        const call = (seen.calls[part.index] ??= { name: null, args: "" });
        if (part.id) call.name = part.function.name;
        call.args += part.function?.arguments ?? "";
      }
      seen.logprobs.push(...(choice.logprobs?.content ?? []));
      if (choice.finish_reason) {
        assert.equal(seen.finish, null, "one finish_reason per choice");
        seen.finish = choice.finish_reason;
      }
    }
  }
  for (const seen of Object.values(choices)) {
    seen.calls = Object.keys(seen.calls)
      .sort((a, b) => a - b)
      .map((index) => [seen.calls[index].name, JSON.parse(seen.calls[index].args)]);
  }
  assert.ok(usage, "a stream with include_usage ends with the usage");
  return { id, choices, usage, chunks, toolDeltas };
}

const STREAM = { stream: true, stream_options: { include_usage: true } };

// -- the checks -----------------------------------------------------------------------------
// Each takes the client and a `tally` that adds a request's usage to the check's tokens.
const CHECKS = {
  async chat({ client, model, greedy, tally }) {
    const answer = tally(await greedy({ max_tokens: 24 }));
    assert.equal(answer.object, "chat.completion");
    assert.ok(answer.id.startsWith("chatcmpl-"), answer.id);
    const [choice] = answer.choices;
    assert.equal(choice.message.role, "assistant");
    assert.ok(choice.message.content);
    assert.equal(choice.finish_reason, "length");
    assert.equal(answer.usage.completion_tokens, 24);
    assert.equal(answer.usage.total_tokens, answer.usage.prompt_tokens + 24);
    const streamed = await collect(await greedy({ max_tokens: 24, ...STREAM }));
    tally(streamed);
    assert.ok(streamed.id.startsWith("chatcmpl-"));
    assert.equal(streamed.choices[0].text, choice.message.content);
    assert.equal(streamed.choices[0].finish, "length");
    for (const count of ["prompt_tokens", "completion_tokens", "total_tokens"]) {
      assert.equal(streamed.usage[count], answer.usage[count], count);
    }
    const models = [];
    for await (const entry of client.models.list()) models.push(entry.id);
    assert.ok(models.includes(model), `${model} is not in ${models}`);
    return { content: choice.message.content, usage: answer.usage, models };
  },

  async stop({ greedy, tally }) {
    const full = tally(await greedy({ max_tokens: 60 })).choices[0].message.content;
    let start = 10;
    while (start < full.length - 3 && !/^[^\p{C}]{3}$/u.test(full.slice(start, start + 3))) {
      start += 1;
    }
    assert.ok(start < full.length - 3, `no printable stop in ${JSON.stringify(full)}`);
    const stop = full.slice(start, start + 3);
    const expected = full.slice(0, full.indexOf(stop));
    const answer = tally(await greedy({ max_tokens: 60, stop: [stop, "never in the answer"] }));
    assert.equal(answer.choices[0].message.content, expected);
    assert.equal(answer.choices[0].finish_reason, "stop");
    const streamed = await collect(await greedy({ max_tokens: 60, stop, ...STREAM }));
    tally(streamed);
    assert.equal(streamed.choices[0].text, expected);
    assert.equal(streamed.choices[0].finish, "stop");
    return { stop, content: expected };
  },

  async seed_and_n({ greedy, tally }) {
    const sample = { temperature: 1.0, top_p: 0.95, seed: 42, max_tokens: 20 };
    const first = tally(await greedy(sample)).choices[0].message.content;
    assert.equal(tally(await greedy(sample)).choices[0].message.content, first);
    const several = tally(await greedy({ ...sample, n: 3 }));
    assert.deepEqual(
      several.choices.map((c) => c.index),
      [0, 1, 2],
    );
    assert.equal(several.choices[0].message.content, first); // choice i uses seed + i
    assert.equal(several.usage.completion_tokens, 60);
    const streamed = await collect(await greedy({ ...sample, n: 3, ...STREAM }));
    tally(streamed);
    assert.deepEqual(
      Object.values(streamed.choices).map((c) => c.text),
      several.choices.map((c) => c.message.content),
    );
    assert.equal(streamed.usage.completion_tokens, 60);
    return { contents: several.choices.map((c) => c.message.content) };
  },

  async logprobs({ greedy, tally }) {
    const answer = tally(await greedy({ max_tokens: 12, logprobs: true, top_logprobs: 3 }));
    const content = answer.choices[0].logprobs.content;
    assert.equal(content.length, 12);
    assert.equal(answer.usage.completion_tokens, 12);
    const text = Buffer.from(content.flatMap((t) => t.bytes)).toString("utf8");
    assert.equal(text, answer.choices[0].message.content); // a token's bytes join to the text
    for (const token of content) {
      const ranked = token.top_logprobs.map((t) => t.logprob);
      assert.equal(ranked.length, 3);
      assert.deepEqual(ranked, [...ranked].sort((a, b) => b - a));
      assert.ok(ranked[0] <= 0);
      assert.equal(token.token, token.top_logprobs[0].token); // greedy: the most likely
    }
    const streamed = await collect(
      await greedy({ max_tokens: 12, logprobs: true, top_logprobs: 3, ...STREAM }),
    );
    tally(streamed);
    const tokens = streamed.choices[0].logprobs;
    assert.deepEqual(
      tokens.map((t) => t.token),
      content.map((t) => t.token),
    );
    tokens.forEach((t, i) => assert.ok(Math.abs(t.logprob - content[i].logprob) < 1e-4));
    return { chosen: content.map((t) => [t.token, t.logprob]) };
  },

  async penalties({ greedy, tally }) {
    const plain = tally(await greedy({ max_tokens: 40 })).choices[0].message.content;
    const answers = {};
    for (const penalty of [{ frequency_penalty: 2.0 }, { presence_penalty: 2.0 }]) {
      const text = tally(await greedy({ max_tokens: 40, ...penalty })).choices[0].message.content;
      assert.notEqual(text, plain, `${JSON.stringify(penalty)} changed nothing`);
      answers[Object.keys(penalty)[0]] = text;
    }
    const streamed = await collect(
      await greedy({ max_tokens: 40, frequency_penalty: 2.0, ...STREAM }),
    );
    tally(streamed);
    assert.equal(streamed.choices[0].text, answers.frequency_penalty);
    return { plain, ...answers };
  },

  async json_schema({ client, model, greedy, tally }) {
    const several = tally(
      await greedy({ max_tokens: 60, temperature: 1.0, seed: 5, n: 3,
                     response_format: FRUIT_FORMAT }), // prettier-ignore
    );
    const sampled = several.choices.map((choice) => {
      assert.equal(choice.finish_reason, "stop");
      return checkFruit(JSON.parse(choice.message.content));
    });
    const streamed = await collect(
      await greedy({ max_tokens: 60, response_format: FRUIT_FORMAT, ...STREAM }),
    );
    tally(streamed);
    const streamedFruit = checkFruit(JSON.parse(streamed.choices[0].text));
    // The SDK's own helper parses a json_schema answer into `message.parsed`.
    const parsed = tally(
      await client.chat.completions.parse({
        model,
        messages: HELLO,
        response_format: FRUIT_FORMAT,
        max_tokens: 60,
        temperature: 0,
      }),
    );
    const fruit = checkFruit(parsed.choices[0].message.parsed);
    assert.deepEqual(fruit, streamedFruit); // greedy both times
    const objects = tally(
      await greedy({ max_tokens: 40, temperature: 1.0, seed: 1, n: 2,
                     response_format: { type: "json_object" } }), // prettier-ignore
    );
    for (const choice of objects.choices) {
      assert.ok(choice.message.content.startsWith("{"), choice.message.content);
      if (choice.finish_reason === "stop") {
        assert.equal(typeof JSON.parse(choice.message.content), "object");
      }
    }
    return { schema: FRUIT, answers: [...sampled, fruit] };
  },

  async tools({ client, model, greedy, tally }) {
    const required = tally(
      await greedy({ max_tokens: 60, temperature: 1.0, seed: 2, n: 2, tools: TOOLS,
                     tool_choice: "required" }), // prettier-ignore
    );
    const forced = required.choices.map((choice) => {
      assert.equal(choice.finish_reason, "tool_calls");
      assert.equal(choice.message.content, null);
      const calls = callsOf(choice.message);
      assert.equal(calls.length, 1);
      return calls[0];
    });
    const named = { type: "function", function: { name: "set_alarm" } };
    const answer = tally(await greedy({ max_tokens: 60, tools: TOOLS, tool_choice: named }));
    const [call] = callsOf(answer.choices[0].message);
    assert.equal(call[0], "set_alarm");
    // Streamed: the name first, then the arguments in pieces.
    const streamed = await collect(
      await greedy({ max_tokens: 60, tools: TOOLS, tool_choice: named, ...STREAM }),
    );
    tally(streamed);
    assert.ok(streamed.toolDeltas >= 2, `${streamed.toolDeltas} tool-call deltas`);
    assert.deepEqual(streamed.choices[0].calls, [call]);
    assert.equal(streamed.choices[0].finish, "tool_calls");
    // The SDK's stream helper: argument-delta events, then the assembled completion with
    // the strict tool's arguments parsed.
    let argumentDeltas = 0;
    const runner = client.chat.completions
      .stream({ model, messages: HELLO, tools: TOOLS, tool_choice: named, max_tokens: 60,
                temperature: 0, stream_options: { include_usage: true } }) // prettier-ignore
      .on("tool_calls.function.arguments.delta", () => (argumentDeltas += 1));
    const final = tally(await runner.finalChatCompletion());
    assert.ok(argumentDeltas >= 1);
    const helperCall = final.choices[0].message.tool_calls[0];
    assert.deepEqual(helperCall.function.parsed_arguments, call[1]);
    // The call and its result in the history: accepted and answered.
    const made = answer.choices[0].message.tool_calls;
    const history = [
      ...HELLO,
      { role: "assistant", tool_calls: made },
      { role: "tool", tool_call_id: made[0].id, content: "Alarm set." },
    ];
    const reply = tally(
      await client.chat.completions.create({ model, messages: history, tools: TOOLS,
                                             max_tokens: 8, temperature: 0 }), // prettier-ignore
    );
    assert.ok(reply.choices[0].message.content || reply.choices[0].message.tool_calls);
    // "auto": the tools are in the prompt, "none" hides them.
    const auto = tally(await greedy({ max_tokens: 8, tools: TOOLS }));
    const none = tally(await greedy({ max_tokens: 8, tools: TOOLS, tool_choice: "none" }));
    assert.ok(auto.usage.prompt_tokens > none.usage.prompt_tokens);
    assert.ok(reply.usage.prompt_tokens > auto.usage.prompt_tokens);
    assert.equal(none.choices[0].message.tool_calls ?? null, null);
    return { tools: TOOLS, calls: [...forced, call], tool_deltas: streamed.toolDeltas };
  },

  async completions({ client, model, tally }) {
    const asked = { model, max_tokens: 8, temperature: 0 };
    const answer = tally(
      await client.completions.create({ ...asked, prompt: ["Once upon a time", "Apples"] }),
    );
    assert.equal(answer.object, "text_completion");
    assert.ok(answer.id.startsWith("cmpl-"), answer.id);
    assert.deepEqual(
      answer.choices.map((c) => c.index),
      [0, 1],
    );
    for (const choice of answer.choices) {
      assert.ok(choice.text);
      assert.equal(choice.finish_reason, "length");
    }
    assert.equal(answer.usage.completion_tokens, 16);
    const streamed = await collect(
      await client.completions.create({ ...asked, prompt: "Once upon a time", ...STREAM }),
    );
    tally(streamed);
    assert.equal(streamed.choices[0].text, answer.choices[0].text);
    const prompt = { ...asked, prompt: "Once upon a time", max_tokens: 6, logprobs: 2 };
    const legacy = tally(await client.completions.create(prompt)).choices[0].logprobs;
    assert.equal(legacy.tokens.length, 6);
    assert.equal(legacy.token_logprobs.length, 6);
    assert.equal(legacy.text_offset[0], 0);
    assert.ok(legacy.top_logprobs.every((top) => Object.keys(top).length >= 1));
    const pieces = [];
    for await (const chunk of await client.completions.create({ ...prompt, ...STREAM })) {
      if (chunk.usage) tally(chunk);
      for (const choice of chunk.choices) pieces.push(...(choice.logprobs?.tokens ?? []));
    }
    assert.deepEqual(pieces, legacy.tokens);
    return { texts: answer.choices.map((c) => c.text) };
  },

  async embeddings({ client, embeddingModel, tally }) {
    const texts = ["How do I read a JSON file?", "Parsing JSON text in Python", "Baking sourdough"];
    // The SDK asks for base64 and decodes it into numbers.
    const result = tally(await client.embeddings.create({ model: embeddingModel, input: texts }));
    const vectors = result.data.map((item) => item.embedding);
    assert.deepEqual(
      result.data.map((item) => item.index),
      [0, 1, 2],
    );
    const dot = (a, b) => a.reduce((sum, x, i) => sum + x * b[i], 0);
    for (const vector of vectors) assert.ok(Math.abs(Math.sqrt(dot(vector, vector)) - 1) < 1e-4);
    assert.ok(dot(vectors[0], vectors[1]) > dot(vectors[0], vectors[2]) + 0.3);
    assert.ok(result.usage.prompt_tokens > 0);
    return { model: result.model, dimensions: vectors[0].length };
  },

  async errors({ client, model, greedy }) {
    const seen = [];
    const expect = async (request, Kind, status, param) => {
      const error = await request.then(
        () => assert.fail(`no ${status}`),
        (e) => e,
      );
      assert.ok(error instanceof Kind, `${error.constructor.name}: ${error.message}`);
      assert.ok(error instanceof OpenAI.APIError);
      assert.equal(error.status, status);
      assert.equal(error.param, param, error.message);
      assert.ok(error.error.message);
      seen.push({ status: error.status, code: error.code, type: error.type, param: error.param });
    };
    await expect(
      client.chat.completions.create({ model: "gpt-4o", messages: HELLO, max_tokens: 4 }),
      OpenAI.NotFoundError,
      404,
      "model",
    );
    await expect(
      client.chat.completions.create({ model: "gpt-4o", messages: HELLO, stream: true }),
      OpenAI.NotFoundError,
      404,
      "model",
    );
    await expect(greedy({ temperature: 5 }), OpenAI.BadRequestError, 400, "temperature");
    const unusable = { type: "json_schema", json_schema: { name: "x", schema: { type: 5 } } };
    const refused = greedy({ response_format: unusable });
    await expect(refused, OpenAI.BadRequestError, 400, "response_format");
    assert.equal(seen[0].code, "model_not_found");
    return { errors: seen };
  },
};

// -- running them ----------------------------------------------------------------------------
const USAGE = `usage: node tests/node/openai_sdk.mjs --base-url URL [--api-key KEY] [--model NAME]
  [--embedding-model NAME] [--checks ${Object.keys(CHECKS).join(",")}]`;

function options() {
  try {
    const { values } = parseArgs({
      options: {
        "base-url": { type: "string" },
        "api-key": { type: "string", default: process.env.OPENAI_API_KEY ?? "unused" },
        model: { type: "string", default: "champion" },
        "embedding-model": { type: "string", default: "sentence-transformers/all-MiniLM-L6-v2" },
        checks: { type: "string", default: Object.keys(CHECKS).join(",") },
      },
    });
    if (!values["base-url"]) {
      throw new Error("--base-url is required (serving's or the gateway's /v1)");
    }
    const unknown = values.checks.split(",").filter((name) => !(name in CHECKS));
    if (unknown.length) {
      throw new Error(`unknown checks ${unknown}: choose from ${Object.keys(CHECKS)}`);
    }
    return values;
  } catch (error) {
    console.error(`error: ${error.message}\n${USAGE}`);
    process.exit(2);
  }
}

async function main() {
  const values = options();
  const client = new OpenAI.OpenAI({
    baseURL: values["base-url"],
    apiKey: values["api-key"],
    maxRetries: 0,
    timeout: 120_000,
  });
  const model = values.model;
  const greedy = (params) =>
    client.chat.completions.create({
      model,
      messages: HELLO,
      max_tokens: 24,
      temperature: 0,
      ...params,
    });
  let failed = 0;
  for (const name of values.checks.split(",")) {
    let tokens = 0;
    const tally = (answer) => {
      assert.ok(answer.usage, "every answer carries its usage");
      tokens += answer.usage.total_tokens;
      return answer;
    };
    const started = performance.now();
    let line;
    try {
      const seen = await CHECKS[name]({
        client,
        model,
        embeddingModel: values["embedding-model"],
        greedy,
        tally,
      });
      line = { check: name, ok: true, tokens, ...seen };
    } catch (error) {
      failed += 1;
      line = { check: name, ok: false, tokens, error: String(error?.stack ?? error) };
    }
    line.seconds = Math.round(performance.now() - started) / 1000;
    console.log(JSON.stringify(line));
  }
  process.exit(failed ? 1 : 0);
}

await main();
