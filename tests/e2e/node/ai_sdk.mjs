// The Vercel AI SDK (ai + @ai-sdk/openai) against the gateway's /v1, with the Responses
// model (openai.responses) and the Chat Completions model (openai.chat): generateText,
// streamText, and a tool the SDK runs itself before sending its result back. Prints one
// JSON object of what it saw; any thrown error exits non-zero.
import { createOpenAI } from "@ai-sdk/openai";
import { generateText, jsonSchema, stepCountIs, streamText, tool } from "ai";
import { z } from "zod";

const MODEL = "gpt-5.5";
const ASK_WEATHER = 'Call get_weather with {"city":"Paris"}';

const openai = createOpenAI({
  baseURL: process.env.POOLER_BASE_URL,
  apiKey: process.env.POOLER_KEY,
});

const executed = [];

function weatherTool(schema) {
  return tool({
    description: "The weather in a city",
    inputSchema: schema,
    execute: async ({ city }) => {
      executed.push(city);
      return `sunny in ${city}`;
    },
  });
}

const ZOD_WEATHER = z.object({ city: z.string() });
const JSON_WEATHER = jsonSchema({
  type: "object",
  properties: { city: { type: "string" } },
  required: ["city"],
  additionalProperties: false,
});

function usageOf(usage) {
  return { input: usage.inputTokens ?? 0, output: usage.outputTokens ?? 0, total: usage.totalTokens ?? 0 };
}

function stepsOf(steps) {
  return steps.map((step) => ({
    finish: step.finishReason,
    calls: step.toolCalls.map((call) => ({ name: call.toolName, input: call.input })),
    results: step.toolResults.map((result) => result.output),
    text: step.text,
  }));
}

async function exercise(model, schema, tag) {
  const found = {};
  const plain = await generateText({ model, prompt: `Reply with exactly: ${tag} generated` });
  found.generated = plain.text;
  found.generated_finish = plain.finishReason;
  found.generated_usage = usageOf(plain.usage);

  const streamed = streamText({ model, prompt: `Reply with exactly: ${tag} streamed` });
  const parts = [];
  for await (const delta of streamed.textStream) parts.push(delta);
  found.streamed = parts.join("");
  found.streamed_parts = parts.length;
  found.streamed_finish = await streamed.finishReason;
  found.streamed_usage = usageOf(await streamed.usage);

  const tools = { get_weather: weatherTool(schema) };
  executed.length = 0;
  const called = await generateText({
    model,
    tools,
    stopWhen: stepCountIs(3),
    prompt: ASK_WEATHER,
  });
  found.tool_text = called.text;
  found.tool_finish = called.finishReason;
  found.tool_steps = stepsOf(called.steps);
  found.tool_executed = [...executed];

  executed.length = 0;
  const streamedCall = streamText({ model, tools, stopWhen: stepCountIs(3), prompt: ASK_WEATHER });
  const streamedParts = [];
  for await (const delta of streamedCall.textStream) streamedParts.push(delta);
  found.stream_tool_text = streamedParts.join("");
  found.stream_tool_steps = stepsOf(await streamedCall.steps);
  found.stream_tool_executed = [...executed];
  return found;
}

const result = {
  responses: await exercise(openai.responses(MODEL), ZOD_WEATHER, "responses"),
  default_model: (await generateText({ model: openai(MODEL), prompt: "Reply with exactly: default" })).text,
  chat: await exercise(openai.chat(MODEL), JSON_WEATHER, "chat"),
};
process.stdout.write(JSON.stringify(result) + "\n");
