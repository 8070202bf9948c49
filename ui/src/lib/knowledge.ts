// Knowledge bases and the files of a chat (platform_api/routes/knowledge.py and
// routes/chat_knowledge.py): uploads are multipart; indexing runs in the background, so a
// file's status moves queued → parsing → embedding → ready (or failed, with the reason).
import { client, unwrap } from "./api";
import type { ChatKnowledge, KnowledgeBase, KnowledgeFile } from "./types";

/** What the file pickers accept (the API sniffs the content anyway). */
export const ACCEPTED_FILES = ".pdf,.docx,.html,.htm,.md,.markdown,.txt,.png,.jpg,.jpeg";

/** A status that will still change. */
export function indexing(file: Pick<KnowledgeFile, "status">): boolean {
  return file.status === "queued" || file.status === "parsing" || file.status === "embedding";
}

function multipart(body: { file: string }): FormData {
  const form = new FormData();
  form.append("file", body.file as unknown as Blob);
  return form;
}

export function uploadToChat(chatId: string, file: File): Promise<KnowledgeFile> {
  return unwrap(
    client.POST("/api/v1/chats/{chat_id}/files", {
      params: { path: { chat_id: chatId } },
      body: { file: file as unknown as string },
      bodySerializer: multipart,
    }),
  );
}

export function uploadToBase(baseId: string, file: File): Promise<KnowledgeFile> {
  return unwrap(
    client.POST("/api/v1/knowledge/{base_id}/files", {
      params: { path: { base_id: baseId } },
      body: { file: file as unknown as string },
      bodySerializer: multipart,
    }),
  );
}

export function chatKnowledge(chatId: string): Promise<ChatKnowledge> {
  return unwrap(client.GET("/api/v1/chats/{chat_id}/knowledge", { params: { path: { chat_id: chatId } } }));
}

export function attachBases(chatId: string, ids: string[]): Promise<ChatKnowledge> {
  return unwrap(
    client.PUT("/api/v1/chats/{chat_id}/knowledge", {
      params: { path: { chat_id: chatId } },
      body: { knowledge_base_ids: ids },
    }),
  );
}

export function deleteChatFile(chatId: string, fileId: string): Promise<unknown> {
  return unwrap(
    client.DELETE("/api/v1/chats/{chat_id}/files/{file_id}", {
      params: { path: { chat_id: chatId, file_id: fileId } },
    }),
  );
}

export function listBases(): Promise<KnowledgeBase[]> {
  return unwrap(client.GET("/api/v1/knowledge"));
}
