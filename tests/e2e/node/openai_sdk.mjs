// The OpenAI Node SDK against the gateway's /v1: Responses and Chat Completions, streaming
// and not, a function-calling round trip in each API, the model list. Prints one JSON
// object of what it saw; any thrown error exits non-zero.
import OpenAI from "openai";

const MODEL = "gpt-5.5";
const ASK_WEATHER = 'Call get_weather with {"city":"Paris"}';
const WEATHER = {
  name: "get_weather",
  description: "The weather in a city",
  parameters: {
    type: "object",
    properties: { city: { type: "string" } },
    required: ["city"],
  },
};

const client = new OpenAI({
  baseURL: process.env.POOLER_BASE_URL,
  apiKey: process.env.POOLER_KEY,
  maxRetries: 0,
  timeout: 30_000,
});

async function responses() {
  const found = {};
  const plain = await client.responses.create({
    model: MODEL,
    input: "Reply with exactly: node plain",
  });
  found.plain = plain.output_text;
  found.plain_usage = plain.usage?.total_tokens ?? 0;

  const deltas = [];
  const types = [];
  const stream = await client.responses.create({
    model: MODEL,
    input: "Reply with exactly: node streamed",
    stream: true,
  });
  for await (const event of stream) {
    types.push(event.type);
    if (event.type === "response.output_text.delta") deltas.push(event.delta);
    if (event.type === "response.completed") {
      found.streamed_usage = event.response.usage?.total_tokens ?? 0;
    }
  }
  found.streamed = deltas.join("");
  found.types = types;

  const helper = client.responses.stream({
    model: MODEL,
    input: "Reply with exactly: node helper",
  });
  const helperDeltas = [];
  helper.on("response.output_text.delta", (event) => helperDeltas.push(event.delta));
  const final = await helper.finalResponse();
  found.helper = final.output_text;
  found.helper_deltas = helperDeltas.join("");

  const tool = { type: "function", ...WEATHER };
  const first = await client.responses.create({ model: MODEL, input: ASK_WEATHER, tools: [tool] });
  const call = first.output.find((item) => item.type === "function_call");
  found.call = { name: call.name, arguments: JSON.parse(call.arguments) };
  const second = await client.responses.create({
    model: MODEL,
    tools: [tool],
    input: [
      { role: "user", content: ASK_WEATHER },
      { type: "function_call", call_id: call.call_id, name: call.name, arguments: call.arguments },
      { type: "function_call_output", call_id: call.call_id, output: "sunny" },
    ],
  });
  found.after_call = second.output_text;
  return found;
}

async function chat() {
  const found = {};
  const plain = await client.chat.completions.create({
    model: MODEL,
    messages: [
      { role: "system", content: "Be brief." },
      { role: "user", content: "Reply with exactly: node chat" },
    ],
  });
  found.plain = plain.choices[0].message.content;
  found.plain_finish = plain.choices[0].finish_reason;
  found.plain_usage = plain.usage?.total_tokens ?? 0;

  const stream = await client.chat.completions.create({
    model: MODEL,
    messages: [{ role: "user", content: "Reply with exactly: node chat stream" }],
    stream: true,
    stream_options: { include_usage: true },
  });
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  const withChoices = chunks.filter((c) => c.choices.length > 0);
  found.streamed = withChoices.map((c) => c.choices[0].delta.content ?? "").join("");
  found.first_role = withChoices[0].choices[0].delta.role;
  found.stream_finish = withChoices.at(-1).choices[0].finish_reason;
  found.usage_chunk = chunks.at(-1).usage?.total_tokens ?? null;
  found.usage_chunk_choices = chunks.at(-1).choices.length;

  const tool = { type: "function", function: WEATHER };
  const messages = [{ role: "user", content: ASK_WEATHER }];
  const call = await client.chat.completions.create({ model: MODEL, messages, tools: [tool] });
  const choice = call.choices[0];
  found.call_finish = choice.finish_reason;
  const toolCall = choice.message.tool_calls[0];
  found.call = {
    type: toolCall.type,
    name: toolCall.function.name,
    arguments: JSON.parse(toolCall.function.arguments),
  };
  messages.push(choice.message);
  messages.push({ role: "tool", tool_call_id: toolCall.id, content: "sunny" });
  const answer = await client.chat.completions.create({ model: MODEL, messages, tools: [tool] });
  found.after_call = answer.choices[0].message.content;
  found.after_call_finish = answer.choices[0].finish_reason;

  // The same call streamed, through the SDK's runner helper that reassembles the chunks.
  const runner = client.chat.completions.stream({
    model: MODEL,
    messages: messages.slice(0, 1),
    tools: [tool],
  });
  const completion = await runner.finalChatCompletion();
  const streamedCall = completion.choices[0].message.tool_calls[0];
  found.streamed_call = {
    name: streamedCall.function.name,
    arguments: JSON.parse(streamedCall.function.arguments),
    finish: completion.choices[0].finish_reason,
  };
  return found;
}

async function models() {
  const ids = [];
  for await (const model of client.models.list()) ids.push(model.id);
  return ids;
}

const result = { responses: await responses(), chat: await chat(), models: await models() };
process.stdout.write(JSON.stringify(result) + "\n");
